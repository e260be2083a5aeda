// A kj::EventPort driven by an asio::io_context, so that one thread runs both: Asio owns every
// socket, timer and signal; KJ runs only the Cap'n Proto RPC state machine. When KJ has queued
// work, the port posts a handler that runs the KJ loop; KJ never blocks the thread itself.
//
// Use: on the loop thread, construct the port, a kj::EventLoop on it (the port's setLoop), and a
// kj::WaitScope, then run the io_context. KJ objects belong to this thread.
#pragma once

#include <atomic>

#include <kj/async.h>

#include "daemon/asio.h"

namespace imaged::rpc {

class AsioEventPort final : public kj::EventPort {
 public:
  explicit AsioEventPort(asio::io_context& io);
  ~AsioEventPort();

  // Marks an Asio handler that hands KJ an event (a socket's bytes, a write's end): KJ work it
  // makes runs when the handler ends, instead of in a handler posted behind it. That saves Asio
  // a turn of its reactor (an epoll_wait) on every call. No-op off the loop's thread.
  class Turn {
   public:
    Turn();
    ~Turn();
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    AsioEventPort* port_;
  };

  void setLoop(kj::EventLoop* loop) { loop_ = loop; }

  // For Promise::wait(), which the daemon does not use on this thread: one Asio event at most.
  bool wait() override;
  bool poll() override;
  void setRunnable(bool runnable) override;
  void wake() const override;

 private:
  asio::io_context& io_;
  void runLoop();

  kj::EventLoop* loop_ = nullptr;
  bool scheduled_ = false;  // a run of the KJ loop is due (posted, or at the end of a Turn)
  int turns_ = 0;           // Turns open on this thread
  mutable std::atomic<bool> woken_{false};
};

}  // namespace imaged::rpc
