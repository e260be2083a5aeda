#include "daemon/rpc/asio_stream.h"

#include <kj/debug.h>

#include <cstring>
#include <vector>

namespace imaged::rpc {

struct AsioStream::State {
  explicit State(asio::local::stream_protocol::socket s) : socket(std::move(s)) {}
  asio::local::stream_protocol::socket socket;
  bool disconnected = false;
  kj::Own<kj::PromiseFulfiller<void>> disconnectFulfiller;
  kj::Maybe<kj::ForkedPromise<void>> disconnect;

  void markDisconnected() {
    if (disconnected) return;
    disconnected = true;
    if (disconnectFulfiller.get() != nullptr) disconnectFulfiller->fulfill();
  }
};

AsioStream::AsioStream(asio::local::stream_protocol::socket socket)
    : state_(std::make_shared<State>(std::move(socket))) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  state_->disconnectFulfiller = kj::mv(paf.fulfiller);
  state_->disconnect = paf.promise.fork();
}

AsioStream::~AsioStream() noexcept(false) {
  boost::system::error_code ignored;
  state_->socket.close(ignored);  // pending handlers complete with operation_aborted
  // Handlers may outlive the stream (and the KJ loop, at exit): leave them no KJ object.
  state_->disconnect = nullptr;
  state_->disconnectFulfiller = nullptr;
}

kj::Promise<size_t> AsioStream::tryRead(void* buffer, size_t minBytes, size_t maxBytes) {
  auto paf = kj::newPromiseAndFulfiller<size_t>();
  auto wanted = std::make_shared<bool>(true);
  auto owned = std::make_shared<std::vector<char>>(maxBytes);
  asio::async_read(
      state_->socket, asio::buffer(*owned), asio::transfer_at_least(minBytes),
      [state = state_, wanted, owned, buffer, fulfiller = kj::mv(paf.fulfiller)](
          const boost::system::error_code& ec, size_t n) mutable {
        if (!*wanted) return;  // the read was cancelled: `buffer` may be gone
        if (ec && ec != asio::error::eof) {
          state->markDisconnected();
          if (ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
            fulfiller->fulfill(0);  // as end of stream
          } else {
            fulfiller->reject(KJ_EXCEPTION(DISCONNECTED, "read failed", ec.message()));
          }
          return;
        }
        std::memcpy(buffer, owned->data(), n);
        fulfiller->fulfill(kj::mv(n));
      });
  return paf.promise.attach(kj::defer([wanted] { *wanted = false; }));
}

kj::Promise<void> AsioStream::writeOwned(std::shared_ptr<std::string> bytes) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  asio::async_write(state_->socket, asio::buffer(*bytes),
                    [state = state_, bytes, fulfiller = kj::mv(paf.fulfiller)](
                        const boost::system::error_code& ec, size_t) mutable {
                      if (ec) {
                        state->markDisconnected();
                        fulfiller->reject(KJ_EXCEPTION(DISCONNECTED, "write failed", ec.message()));
                        return;
                      }
                      fulfiller->fulfill();
                    });
  return kj::mv(paf.promise);
}

kj::Promise<void> AsioStream::write(const void* buffer, size_t size) {
  return writeOwned(std::make_shared<std::string>(static_cast<const char*>(buffer), size));
}

kj::Promise<void> AsioStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  auto bytes = std::make_shared<std::string>();
  size_t total = 0;
  for (auto& p : pieces) total += p.size();
  bytes->reserve(total);
  for (auto& p : pieces) bytes->append(reinterpret_cast<const char*>(p.begin()), p.size());
  return writeOwned(kj::mv(bytes));
}

kj::Promise<void> AsioStream::whenWriteDisconnected() {
  KJ_IF_MAYBE (fork, state_->disconnect) {
    return fork->addBranch();
  }
  return kj::READY_NOW;
}

void AsioStream::shutdownWrite() {
  boost::system::error_code ignored;
  state_->socket.shutdown(asio::socket_base::shutdown_send, ignored);
}

void AsioStream::abortRead() {
  boost::system::error_code ignored;
  state_->socket.shutdown(asio::socket_base::shutdown_receive, ignored);
}

}  // namespace imaged::rpc
