#include "store/subscription.h"

#include <gtest/gtest.h>

#include <thread>

#include "test_util.h"

namespace imaged::store {
namespace {

using namespace std::chrono_literals;
using testing::decode;
using testing::openLog;
using testing::request;
using testing::TempDir;

TEST(Subscription, DeliversStoredEventsThenLiveOnesInOrder) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 3)).ok());
  Subscription sub(*log, 2);
  auto first = sub.next(100, 0ms);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].sequence, 2u);
  EXPECT_EQ((*first)[1].sequence, 3u);
  EXPECT_EQ(sub.position(), 4u);

  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(log->append(request("t", 1, "live")).ok());
  });
  auto live = sub.next(100, 5000ms);  // waits for the commit
  writer.join();
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].sequence, 4u);
  EXPECT_EQ(decode((*live)[0].words).reason, "live-0");
}

TEST(Subscription, ReturnsNothingWhenTheWaitPassesWithoutACommit) {
  TempDir dir;
  auto log = openLog(dir.path());
  Subscription sub(*log, 1);
  auto r = sub.next(10, 30ms);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  EXPECT_EQ(sub.position(), 1u);
}

TEST(Subscription, SlowSubscriberTakesAtMostWhatItAsksForAndMissesNothing) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 25)).ok());
  Subscription sub(*log, 0);
  std::vector<uint64_t> seen;
  for (;;) {
    auto r = sub.next(4, 0ms);
    ASSERT_TRUE(r.ok());
    ASSERT_LE(r->size(), 4u);
    if (r->empty()) break;
    for (auto& e : *r) seen.push_back(e.sequence);
  }
  ASSERT_EQ(seen.size(), 25u);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);
}

TEST(Subscription, ConcurrentWritersAreSeenWithoutGapsOrDuplicates) {
  TempDir dir;
  auto log = openLog(dir.path());
  constexpr int kThreads = 4, kAppends = 150;
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kAppends; ++i) {
        ASSERT_TRUE(log->append(request("s" + std::to_string(t), 1 + i % 2)).ok());
      }
    });
  }
  const uint64_t total = kThreads * (kAppends / 2) * 3;  // alternating 1 and 2 events
  Subscription sub(*log, 1);
  uint64_t expected = 1;
  while (expected <= total) {
    auto r = sub.next(7, 5000ms);
    ASSERT_TRUE(r.ok());
    ASSERT_FALSE(r->empty()) << "stalled at " << expected;
    for (auto& e : *r) {
      ASSERT_EQ(e.sequence, expected);
      ASSERT_EQ(decode(e.words).sequence, expected);
      ++expected;
    }
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(log->lastSequence(), total);
}

}  // namespace
}  // namespace imaged::store
