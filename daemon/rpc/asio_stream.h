// A kj::AsyncIoStream over an Asio Unix-domain socket, for capnp::TwoPartyVatNetwork. Lives on
// the loop thread (see event_port.h).
//
// Reads and writes are tried at once, without waiting (the socket is non-blocking): a request
// usually arrives whole in one receive of up to 64 KiB, from which Cap'n Proto's small reads are
// then served, and an answer usually fits in the socket's buffer. Only when the socket is not
// ready does Asio get involved: a read waits for readability and reads in a KJ continuation,
// which KJ runs only while it still wants the read (so a cancelled read never writes into a
// buffer that is gone), and the unsent rest of a write is copied before Asio gets it.
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

 public:
  struct State;  // shared with Asio's handlers, which may outlive the stream

 private:
  kj::Promise<void> writeNow(const char* data, size_t size);
  kj::Promise<void> writeOwned(std::shared_ptr<std::string> bytes, size_t from);
  std::shared_ptr<State> state_;
};

}  // namespace imaged::rpc
