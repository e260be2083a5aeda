#include "daemon/rpc/asio_stream.h"

#include "daemon/rpc/event_port.h"

#include <kj/debug.h>

#include <cstring>
#include <string>
#include <vector>

namespace imaged::rpc {

namespace {

// Bytes asked of the socket at a time: a whole request usually arrives in one receive, and
// Cap'n Proto's small reads (the segment table, then the segments) are then served from memory.
constexpr size_t kChunk = 64 * 1024;

}  // namespace

struct AsioStream::State {
  explicit State(asio::local::stream_protocol::socket s) : socket(std::move(s)) {
    boost::system::error_code ignored;
    socket.non_blocking(true, ignored);  // synchronous attempts return would_block, never wait
  }
  asio::local::stream_protocol::socket socket;
  bool disconnected = false;
  kj::Own<kj::PromiseFulfiller<void>> disconnectFulfiller;
  kj::Maybe<kj::ForkedPromise<void>> disconnect;

  // Received and not yet handed to KJ: in[start, end).
  std::vector<char> in = std::vector<char>(kChunk);
  size_t start = 0, end = 0;
  bool eof = false;
  // An Asio receive into `in` (issued when it was empty) is pending; `received` resolves when
  // it completes. Nothing else writes into `in` meanwhile.
  bool receiving = false;
  kj::Maybe<kj::ForkedPromise<void>> received;
  // The last receive got less than it asked for: the socket was empty then, and a receive now
  // would most likely find nothing either. Leave the next attempt to Asio (which tries once
  // before it waits) instead of making two.
  bool drained = false;

  void markDisconnected() {
    if (disconnected) return;
    disconnected = true;
    if (disconnectFulfiller.get() != nullptr) disconnectFulfiller->fulfill();
  }

  size_t take(char* dst, size_t max) {
    const size_t n = std::min(max, end - start);
    std::memcpy(dst, in.data() + start, n);
    start += n;
    if (start == end) start = end = 0;
    return n;
  }

  // Receives what the socket has now into `dst`, without waiting: bytes read, 0 when nothing
  // is there yet or at the end of the stream (then `eof`). Throws on a broken connection.
  size_t receive(char* dst, size_t max) {
    boost::system::error_code ec;
    const size_t n = socket.read_some(asio::buffer(dst, max), ec);
    drained = ec || n < max;
    if (!ec) return n;
    if (ec == asio::error::would_block || ec == asio::error::try_again) return 0;
    if (ec == asio::error::eof || ec == asio::error::connection_reset) {
      eof = true;
      markDisconnected();
      return 0;
    }
    markDisconnected();
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "read failed", ec.message()));
  }

  // Moves at least `min` bytes into dst (up to `max`) if they can be had without waiting;
  // returns how many it moved.
  size_t readNow(char* dst, size_t min, size_t max) {
    size_t got = take(dst, max);
    while (got < min && !eof && !receiving && !drained) {
      size_t n;
      if (max - got >= kChunk) {
        n = receive(dst + got, max - got);  // large reads skip the buffer
        got += n;
      } else {
        n = receive(in.data(), in.size());
        end = n;
        got += take(dst + got, max - got);
      }
      if (n == 0) break;
    }
    return got;
  }

  // Resolves once the socket has given more bytes into `in` (or ended). Asio receives them
  // itself: a receive, unlike a bare wait for readability, needs no epoll_ctl each time (Asio
  // re-arms the descriptor for every async_wait). The bytes land in `in`, which belongs to the
  // state, so a read that KJ cancels meanwhile loses nothing: the next read takes them.
  kj::Promise<void> readable(const std::shared_ptr<State>& self) {
    if (!receiving) {
      receiving = true;
      auto paf = kj::newPromiseAndFulfiller<void>();
      received = paf.promise.fork();
      const size_t room = in.size() - end;
      socket.async_read_some(
          asio::buffer(in.data() + end, room),
          [self, room, fulfiller = kj::mv(paf.fulfiller)](const boost::system::error_code& ec,
                                                          size_t n) mutable {
            AsioEventPort::Turn turn;
            self->receiving = false;
            self->drained = n < room;
            self->end += n;
            if (ec == asio::error::eof || ec == asio::error::connection_reset) self->eof = true;
            if (ec) self->markDisconnected();
            fulfiller->fulfill();  // the read that follows takes the bytes or sees the end
          });
    }
    return KJ_ASSERT_NONNULL(received).addBranch();
  }
};

namespace {

// The rest of a read that had `got` of at least `min` bytes when the socket ran dry. Runs only
// while KJ still wants the read, so `dst` is alive whenever it is written to.
kj::Promise<size_t> readMore(std::shared_ptr<AsioStream::State> state, char* dst, size_t got,
                             size_t min, size_t max) {
  return state->readable(state).then([state, dst, got, min, max]() mutable -> kj::Promise<size_t> {
    if (state->disconnected && !state->eof) {
      // Closed under us (shutdown, or the stream was destroyed): as end of stream.
      return got + state->take(dst + got, max - got);
    }
    got += state->readNow(dst + got, min - got, max - got);
    if (got >= min || state->eof) return got;
    return readMore(kj::mv(state), dst, got, min, max);
  });
}

}  // namespace

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
  state_->received = nullptr;
  state_->disconnect = nullptr;
  state_->disconnectFulfiller = nullptr;
}

kj::Promise<size_t> AsioStream::tryRead(void* buffer, size_t minBytes, size_t maxBytes) {
  auto* dst = static_cast<char*>(buffer);
  return kj::evalNow([&]() -> kj::Promise<size_t> {  // a broken connection: a rejected read
    const size_t got = state_->readNow(dst, minBytes, maxBytes);
    if (got >= minBytes || state_->eof) return got;
    return readMore(state_, dst, got, minBytes, maxBytes);
  });
}

kj::Promise<void> AsioStream::writeOwned(std::shared_ptr<std::string> bytes, size_t from) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  asio::async_write(state_->socket, asio::buffer(bytes->data() + from, bytes->size() - from),
                    [state = state_, bytes, fulfiller = kj::mv(paf.fulfiller)](
                        const boost::system::error_code& ec, size_t) mutable {
                      AsioEventPort::Turn turn;
                      if (ec) {
                        state->markDisconnected();
                        fulfiller->reject(KJ_EXCEPTION(DISCONNECTED, "write failed", ec.message()));
                        return;
                      }
                      fulfiller->fulfill();
                    });
  return kj::mv(paf.promise);
}

kj::Promise<void> AsioStream::writeNow(const char* data, size_t size) {
  // Most answers fit in the socket's buffer: send now, and hand Asio (a copy of) only the rest.
  size_t sent = 0;
  while (sent < size) {
    boost::system::error_code ec;
    const size_t n = state_->socket.write_some(asio::buffer(data + sent, size - sent), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec) {
      state_->markDisconnected();
      return KJ_EXCEPTION(DISCONNECTED, "write failed", ec.message());
    }
    sent += n;
  }
  if (sent == size) return kj::READY_NOW;
  return writeOwned(std::make_shared<std::string>(data + sent, size - sent), 0);
}

kj::Promise<void> AsioStream::write(const void* buffer, size_t size) {
  return writeNow(static_cast<const char*>(buffer), size);
}

kj::Promise<void> AsioStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (pieces.size() == 1) {
    return writeNow(reinterpret_cast<const char*>(pieces[0].begin()), pieces[0].size());
  }
  std::string bytes;
  size_t total = 0;
  for (auto& p : pieces) total += p.size();
  bytes.reserve(total);
  for (auto& p : pieces) bytes.append(reinterpret_cast<const char*>(p.begin()), p.size());
  return writeNow(bytes.data(), bytes.size());
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
