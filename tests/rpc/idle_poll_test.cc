// The loop thread's adaptive polling before it sleeps (daemon/rpc/idle_poll.h).
#include <gtest/gtest.h>

#include <time.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "daemon/rpc/idle_poll.h"

namespace imaged::rpc {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(PollWindow, GrowsWhileEventsComeWithinTheMaximumAndShrinksWhenTheyDoNot) {
  PollWindow w(microseconds(100));
  EXPECT_EQ(w.current(), microseconds(0));  // an idle daemon does not poll
  w.idleEnded(milliseconds(5));             // a long pause: still nothing
  EXPECT_EQ(w.current(), microseconds(0));
  w.idleEnded(microseconds(30));  // would have been caught by polling
  EXPECT_EQ(w.current(), PollWindow::kStart);
  w.idleEnded(microseconds(30));
  EXPECT_EQ(w.current(), microseconds(20));
  w.idleEnded(microseconds(30));
  EXPECT_EQ(w.current(), microseconds(40));
  w.idleEnded(microseconds(35));  // caught: the window stays
  EXPECT_EQ(w.current(), microseconds(40));
  for (int i = 0; i < 5; ++i) w.idleEnded(microseconds(90));
  EXPECT_EQ(w.current(), microseconds(100));  // never past the maximum
  w.idleEnded(milliseconds(2));               // polled for nothing: halve
  EXPECT_EQ(w.current(), microseconds(50));
  w.idleEnded(milliseconds(2));
  w.idleEnded(milliseconds(2));
  EXPECT_EQ(w.current(), std::chrono::nanoseconds(12'500));  // still above the start
  w.idleEnded(milliseconds(2));
  EXPECT_EQ(w.current(), microseconds(0));  // below the start: off
}

TEST(PollWindow, AZeroMaximumNeverPolls) {
  PollWindow w(microseconds(0));
  for (int i = 0; i < 10; ++i) w.idleEnded(microseconds(1));
  EXPECT_EQ(w.current(), microseconds(0));
}

double threadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

TEST(RunPolling, RunsEveryHandlerAndSleepsWhenNothingComes) {
  asio::io_context io(1);
  auto guard = asio::make_work_guard(io);
  std::atomic<int> ran{0};
  // Bursts of handlers posted from another thread 20 us apart (the loop polls for them), then
  // nothing for 300 ms (the loop must sleep, not poll), then the stop.
  std::thread poster([&] {
    for (int i = 0; i < 200; ++i) {
      asio::post(io, [&] { ++ran; });
      std::this_thread::sleep_for(microseconds(20));
    }
  });
  double cpuWhileIdle = -1;
  std::thread stopper([&] {
    poster.join();
    std::this_thread::sleep_for(milliseconds(50));  // the window shrinks to nothing
    asio::post(io, [&] { cpuWhileIdle = threadCpuSeconds(); });
    std::this_thread::sleep_for(milliseconds(300));
    asio::post(io, [&] {
      cpuWhileIdle = threadCpuSeconds() - cpuWhileIdle;
      guard.reset();
      io.stop();
    });
  });
  runPolling(io, microseconds(100));
  stopper.join();
  EXPECT_EQ(ran.load(), 200);
  // Polling through the 300 ms would cost about 300 ms of this thread's CPU; sleeping, almost
  // none (the bound leaves room for a slow, shared machine).
  EXPECT_GE(cpuWhileIdle, 0.0);
  EXPECT_LT(cpuWhileIdle, 0.1);
}

TEST(RunPolling, ReturnsWhenTheContextRunsOutOfWork) {
  asio::io_context io(1);
  int ran = 0;
  for (int i = 0; i < 3; ++i) asio::post(io, [&] { ++ran; });
  runPolling(io, microseconds(100));  // no work guard: returns once the handlers ran
  EXPECT_EQ(ran, 3);
  EXPECT_TRUE(io.stopped());
}

}  // namespace
}  // namespace imaged::rpc
