// A kj::AsyncIoStream over an Asio Unix-domain socket, for capnp::TwoPartyVatNetwork. Lives on
// the loop thread (see event_port.h).
//
// KJ may cancel a read or write by dropping its promise; Asio cannot take back a buffer it was
// given. So reads land in a buffer of our own and are copied out only if still wanted, and
// writes are copied before they are handed to Asio. Messages here are small; the copies are
// cheap next to a system call.
#pragma once

#include <memory>

#include <kj/async-io.h>

#include "daemon/asio.h"

namespace imaged::rpc {

class AsioStream final : public kj::AsyncIoStream {
 public:
  explicit AsioStream(asio::local::stream_protocol::socket socket);
  ~AsioStream() noexcept(false);

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  void shutdownWrite() override;
  void abortRead() override;

 private:
  struct State;
  kj::Promise<void> writeOwned(std::shared_ptr<std::string> bytes);
  std::shared_ptr<State> state_;
};

}  // namespace imaged::rpc
