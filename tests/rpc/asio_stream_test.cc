// AsioStream and AsioEventPort on a real socket pair, one io_context driving KJ: bytes arrive
// whole and in order however the peer splits them, a read KJ cancels loses nothing, large
// transfers go through the waiting paths both ways, and the end of the stream is seen.
#include "daemon/rpc/asio_stream.h"

#include <gtest/gtest.h>
#include <kj/async.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "daemon/rpc/event_port.h"

namespace imaged::rpc {
namespace {

// One loop thread's worth of Asio and KJ, with our end of a socket pair as an AsioStream.
class Harness {
 public:
  Harness() : port_(io_), loop_(port_), waitScope_(loop_) {
    port_.setLoop(&loop_);
    asio::local::stream_protocol::socket ours(io_), theirs(io_);
    asio::local::connect_pair(ours, theirs);
    peer_ = theirs.release();  // a plain blocking descriptor, written from the test's thread
    stream_ = std::make_unique<AsioStream>(std::move(ours));
  }
  ~Harness() noexcept(false) {
    stream_ = nullptr;
    if (peer_ >= 0) ::close(peer_);
  }

  void peerWrite(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(peer_, bytes.data() + done, bytes.size() - done);
      ASSERT_GT(n, 0);
      done += n;
    }
  }
  // The promise's value, turning the loop meanwhile; throws after 10 s, so that a stream that
  // loses bytes fails the test instead of hanging it.
  template <typename T>
  T await(kj::Promise<T> promise) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!promise.poll(waitScope_)) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("timed out");
      io_.run_one_for(std::chrono::milliseconds(10));
    }
    return promise.wait(waitScope_);
  }

  std::string peerRead(size_t size) {
    std::string out(size, '\0');
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::read(peer_, out.data() + done, size - done);
      if (n <= 0) break;
      done += n;
    }
    out.resize(done);
    return out;
  }

  asio::io_context io_{1};
  // Work, so that the io_context's run_one() waits (as the daemon's, which always listens).
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  AsioEventPort port_;
  kj::EventLoop loop_;
  kj::WaitScope waitScope_;
  int peer_ = -1;
  std::unique_ptr<AsioStream> stream_;
};

TEST(AsioStream, AMessageSplitAcrossWritesArrivesWholeAndInOrder) {
  Harness h;
  std::string buffer(10, '\0');
  auto read = h.stream_->tryRead(buffer.data(), 10, 10);
  std::jthread writer([&] {
    for (const char* piece : {"01", "234", "5", "6789"}) {
      h.peerWrite(piece);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  EXPECT_EQ(h.await(kj::mv(read)), 10u);
  writer.join();
  EXPECT_EQ(buffer, "0123456789");
}

TEST(AsioStream, ACancelledReadLosesNoBytes) {
  Harness h;
  std::string first(5, '\0');
  {
    auto read = h.stream_->tryRead(first.data(), 5, 5);
    // Nothing to read yet: the stream waits (Asio's receive is pending). Drop the read.
    EXPECT_FALSE(read.poll(h.waitScope_));
  }
  h.peerWrite("hello");
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  h.io_.poll();  // the pending receive completes into the stream's buffer, with no reader
  std::string second(5, '\0');
  EXPECT_EQ(h.await(h.stream_->tryRead(second.data(), 5, 5)), 5u);
  EXPECT_EQ(second, "hello");
  EXPECT_EQ(first, std::string(5, '\0')) << "a cancelled read's buffer was written to";
}

TEST(AsioStream, LargeTransfersBothWays) {
  Harness h;
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 4096);
  // To us: the peer writes 3 MiB while we read it in uneven pieces.
  std::jthread writer([&] { h.peerWrite(big); });
  std::string got;
  std::string piece(100'000, '\0');
  while (got.size() < big.size()) {
    const size_t want = std::min(piece.size(), big.size() - got.size());
    const size_t n = h.await(h.stream_->tryRead(piece.data(), 1, want));
    ASSERT_GT(n, 0u);
    got.append(piece.data(), n);
  }
  writer.join();
  EXPECT_TRUE(got == big);
  // From us: more than the socket's buffer, so the write has to wait for the peer.
  std::string echoed;
  std::jthread reader([&] { echoed = h.peerRead(big.size()); });
  h.await(h.stream_->write(big.data(), big.size()));
  reader.join();
  EXPECT_TRUE(echoed == big);
}

TEST(AsioStream, TheEndOfTheStreamEndsAShortRead) {
  Harness h;
  std::string buffer(10, '\0');
  auto read = h.stream_->tryRead(buffer.data(), 10, 10);
  h.peerWrite("abc");
  ::shutdown(h.peer_, SHUT_WR);
  EXPECT_EQ(h.await(kj::mv(read)), 3u);
  EXPECT_EQ(buffer.substr(0, 3), "abc");
  EXPECT_EQ(h.await(h.stream_->tryRead(buffer.data(), 1, 10)), 0u);
}

}  // namespace
}  // namespace imaged::rpc
