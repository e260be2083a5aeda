#include "daemon/rpc/event_port.h"

namespace imaged::rpc {

bool AsioEventPort::wait() {
  io_.run_one();
  return woken_.exchange(false);
}

bool AsioEventPort::poll() {
  io_.poll();
  return woken_.exchange(false);
}

void AsioEventPort::setRunnable(bool runnable) {
  if (!runnable || scheduled_) return;
  scheduled_ = true;
  asio::post(io_, [this] {
    scheduled_ = false;
    // run() turns the loop until it is empty; anything it queues again re-posts through
    // setRunnable(true), so other Asio handlers interleave with long KJ work.
    if (loop_ && loop_->isRunnable()) loop_->run(64);
    if (loop_ && loop_->isRunnable()) setRunnable(true);
  });
}

void AsioEventPort::wake() const {
  woken_ = true;
  asio::post(io_, [] {});
}

}  // namespace imaged::rpc
