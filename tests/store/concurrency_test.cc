// Many threads appending to many streams at once, with expected versions.
#include <gtest/gtest.h>

#include <future>

#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "store/event_log.h"
#include "test_util.h"

namespace imaged::store {
namespace {

using testing::decode;
using testing::openLog;
using testing::request;
using testing::TempDir;

TEST(Concurrency, ManyAppendersManyStreamsNoGapsPerStreamOrderAndExpectedVersionsHonoured) {
  TempDir dir;
  auto log = openLog(dir.path());
  constexpr int kThreads = 16, kAppendsPerThread = 60, kStreams = 5;

  std::mutex m;
  std::map<std::string, std::vector<std::string>> acknowledged;  // stream -> tags in ack order
  std::atomic<int> conflicts{0};

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kAppendsPerThread; ++i) {
        const std::string stream = "stream-" + std::to_string((t + i) % kStreams);
        const std::string tag = "t" + std::to_string(t) + "-" + std::to_string(i);
        // Optimistic concurrency: read the version, append expecting it, retry on conflict.
        for (;;) {
          uint64_t version;
          {
            auto txn = log->read();
            ASSERT_TRUE(txn.ok());
            version = (*txn)->streamVersion(stream);
          }
          auto r = log->append(request(stream, 1, tag, ExpectedVersion::exactly(version)));
          if (r.ok()) {
            ASSERT_EQ(r->streamVersion, version + 1);
            break;
          }
          ASSERT_EQ(r.error().code, "E_VERSION_CONFLICT") << r.error().message;
          ++conflicts;
        }
      }
    });
  }
  for (auto& th : threads) th.join();

  const uint64_t total = kThreads * kAppendsPerThread;
  EXPECT_EQ(log->lastSequence(), total);

  // Gapless global order, gapless per-stream versions, each thread's events in its own order.
  auto txn = log->read();
  uint64_t expectedSeq = 1;
  std::map<std::string, uint64_t> streamVersions;
  std::map<int, int> lastIndexOfThread;
  std::set<std::string> tags;
  ASSERT_TRUE((*txn)
                  ->forEach(1,
                            [&](const EventRef& e) {
                              auto d = decode(e.words());
                              EXPECT_EQ(d.sequence, expectedSeq++);
                              EXPECT_EQ(d.streamVersion, ++streamVersions[d.streamId]);
                              const std::string tag = d.reason.substr(0, d.reason.rfind('-'));
                              EXPECT_TRUE(tags.insert(tag).second) << "duplicate " << tag;
                              const int thread = std::stoi(tag.substr(1, tag.find('-') - 1));
                              const int index = std::stoi(tag.substr(tag.find('-') + 1));
                              auto it = lastIndexOfThread.find(thread);
                              if (it != lastIndexOfThread.end()) {
                                EXPECT_GT(index, it->second);
                              }
                              lastIndexOfThread[thread] = index;
                              return true;
                            })
                  .ok());
  EXPECT_EQ(tags.size(), total);
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;

  // Group commit: concurrent appends shared transactions.
  auto stats = log->stats();
  EXPECT_EQ(stats.events, total);
  EXPECT_LT(stats.commits, total + conflicts.load());
}

TEST(Concurrency, QueuedAppendsShareOneCommit) {
  TempDir dir;
  auto log = openLog(dir.path());
  std::atomic<int> left{500};
  std::promise<void> done;
  for (int i = 0; i < 500; ++i) {
    log->appendAsync(request("s" + std::to_string(i % 10), 1), [&](Result<AppendResult> r) {
      EXPECT_TRUE(r.ok());
      if (--left == 0) done.set_value();
    });
  }
  done.get_future().wait();
  EXPECT_EQ(log->lastSequence(), 500u);
  // Without group commit there would be one commit per request.
  EXPECT_LT(log->stats().commits, 500u);
}

}  // namespace
}  // namespace imaged::store
