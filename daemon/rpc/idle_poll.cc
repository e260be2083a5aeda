#include "daemon/rpc/idle_poll.h"

#include <sched.h>

#include <algorithm>

namespace imaged::rpc {

void PollWindow::idleEnded(Duration idle) {
  if (max_ <= Duration::zero()) return;
  if (idle <= window_) return;  // polling caught it
  if (idle <= max_) {
    window_ = std::min(max_, std::max(kStart, window_ * 2));  // a longer window would have
  } else {
    window_ /= 2;  // nothing came in time: poll less
    if (window_ < kStart) window_ = Duration::zero();
  }
}

void runPolling(asio::io_context& io, PollWindow::Duration maxWindow) {
  using Clock = std::chrono::steady_clock;
  PollWindow window(maxWindow);
  while (!io.stopped()) {
    if (io.poll() > 0) continue;  // handlers ran; more may be ready
    if (io.stopped()) break;
    const auto idleFrom = Clock::now();
    bool caught = false;
    if (window.current() > PollWindow::Duration::zero()) {
      const auto until = idleFrom + window.current();
      while (!caught && Clock::now() < until && !io.stopped()) {
        caught = io.poll_one() > 0;
        if (!caught) sched_yield();
      }
    }
    if (!caught && !io.stopped()) io.run_one();  // sleeps until an event comes
    window.idleEnded(Clock::now() - idleFrom);
  }
}

}  // namespace imaged::rpc
