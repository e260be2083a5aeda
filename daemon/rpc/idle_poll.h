// Runs the loop thread's io_context, polling for a short while before it sleeps when events have
// been coming close together.
//
// Why: a thread that sleeps in epoll_wait leaves its CPU idle, and waking an idle CPU is slow on
// virtual machines (a halted vCPU must be scheduled again by the host: ~10-40 us here, more than
// the daemon's whole work for a small call). A client that sends one request at a time pays that
// on every call. Polling for the next event for a few tens of microseconds before sleeping keeps
// the CPU awake across the client's gap. (Linux's own guest halt-polling does the same one level
// down, and is off on some hosts.)
//
// The window adapts as the kernel's haltpoll governor does: it grows when the loop slept for less
// than the maximum (a window that long would have caught the event), and shrinks when it slept
// for longer (polling would have burnt CPU for nothing). Idle daemons, and daemons whose clients
// pause, do not poll at all; a busy loop never idles. The polling thread yields its CPU on every
// round, so runnable threads (build workers, the store) go first.
#pragma once

#include <chrono>

#include "daemon/asio.h"

namespace imaged::rpc {

class PollWindow {
 public:
  using Duration = std::chrono::nanoseconds;
  static constexpr Duration kStart = std::chrono::microseconds(10);

  // max: the longest window (0: never poll).
  explicit PollWindow(Duration max) : max_(max) {}

  // How long to poll before sleeping now.
  Duration current() const { return window_; }
  // An idle period ended after `idle` (polling and then sleeping, if it slept).
  void idleEnded(Duration idle);

 private:
  Duration max_;
  Duration window_{0};
};

// io_context::run with polling (above) before each sleep. Returns once `io` stops.
void runPolling(asio::io_context& io, PollWindow::Duration maxWindow);

}  // namespace imaged::rpc
