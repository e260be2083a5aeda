#include "daemon/rpc/event_port.h"

namespace imaged::rpc {

bool AsioEventPort::wait() {
  if (io_.stopped()) io_.restart();  // it stops whenever it runs out of work
  io_.run_one();
  return woken_.exchange(false);
}

bool AsioEventPort::poll() {
  if (io_.stopped()) io_.restart();
  io_.poll();
  return woken_.exchange(false);
}

namespace {
thread_local AsioEventPort* portOfThisThread = nullptr;
}  // namespace

AsioEventPort::AsioEventPort(asio::io_context& io) : io_(io) {
  portOfThisThread = this;
}

AsioEventPort::~AsioEventPort() {
  if (portOfThisThread == this) portOfThisThread = nullptr;
}

void AsioEventPort::setRunnable(bool runnable) {
  if (!runnable || scheduled_) return;
  scheduled_ = true;
  if (turns_ > 0) return;  // the Turn's end runs it
  asio::post(io_, [this] { runLoop(); });
}

void AsioEventPort::runLoop() {
  scheduled_ = false;
  // At most 64 turns, then the rest is posted again (setRunnable), so that other Asio handlers
  // interleave with long KJ work.
  if (loop_ && loop_->isRunnable()) loop_->run(64);
  if (loop_ && loop_->isRunnable()) setRunnable(true);
}

AsioEventPort::Turn::Turn() : port_(portOfThisThread) {
  if (port_) ++port_->turns_;
}

AsioEventPort::Turn::~Turn() {
  if (!port_) return;
  if (--port_->turns_ == 0 && port_->scheduled_) port_->runLoop();
}

void AsioEventPort::wake() const {
  woken_ = true;
  asio::post(io_, [] {});
}

}  // namespace imaged::rpc
