// Faults of the disk: a full disk fails appends clearly and loses nothing acknowledged.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "store/event_log.h"
#include "test_util.h"

namespace imaged::store {
namespace {

using testing::openLog;
using testing::TempDir;

struct Ack {
  uint64_t first, last;
};

// What a store_tool fill child printed: its acknowledged appends, its errors, its last line.
struct FillOutput {
  std::vector<Ack> acks;
  std::vector<std::string> errors;
  std::string after;
};

FillOutput readUntilExit(testing::Child& child) {
  FillOutput out;
  std::string line;
  while (child.readLine(&line)) {
    std::istringstream in(line);
    std::string kind;
    in >> kind;
    if (kind == "ack") {
      Ack a;
      in >> a.first >> a.last;
      out.acks.push_back(a);
    } else if (kind == "error") {
      out.errors.push_back(line);
    } else if (kind == "after") {
      out.after = line;
    }
  }
  child.wait();
  return out;
}

TEST(Faults, FullDiskFailsTheAppendWithAClearErrorAndKeepsEverythingAcknowledged) {
  TempDir dir;
  // A file size limit stands in for a full disk: writes past it fail with EFBIG.
  testing::Child filler({STORE_TOOL, "fill", dir.path(), std::to_string(3 << 20)});
  const auto [acks, errors, after] = readUntilExit(filler);
  ASSERT_FALSE(acks.empty());
  ASSERT_FALSE(errors.empty());
  for (const auto& e : errors) EXPECT_NE(e.find("E_STORAGE_FULL"), std::string::npos) << e;
  // The same process, its log still open, appends again once there is room.
  ASSERT_EQ(after.rfind("after ack ", 0), 0u) << after;
  const uint64_t afterSeq = std::stoull(after.substr(10));

  auto log = openLog(dir.path());
  ASSERT_NE(log, nullptr);
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  auto txn = log->read();
  for (const Ack& a : acks) {
    for (uint64_t s = a.first; s <= a.last; ++s) EXPECT_TRUE((*txn)->get(s).ok()) << s;
  }
  EXPECT_TRUE((*txn)->get(afterSeq).ok());
  EXPECT_EQ((*txn)->lastSequence(), afterSeq);
}

TEST(Faults, RequestsStagedOnTopOfAFailedCommitFailWithItAndWriteNothing) {
  TempDir dir;
  testing::Child burst({STORE_TOOL, "fill-burst", dir.path()});
  const auto [acks, errors, after] = readUntilExit(burst);
  ASSERT_EQ(acks.size() + errors.size(), 300u);
  ASSERT_FALSE(errors.empty());
  // Whatever batch a request was in, the one that failed or one staged on top of it: the disk's
  // error, not a chain or version problem.
  for (const auto& e : errors) EXPECT_EQ(e.rfind("error E_STORAGE_FULL ", 0), 0u) << e;
  ASSERT_EQ(after.rfind("after ack ", 0), 0u) << after;
  const uint64_t afterSeq = std::stoull(after.substr(10));

  // Exactly the first event, the acknowledged ones and the last: failed requests wrote nothing.
  uint64_t acked = 0;
  for (const Ack& a : acks) acked += a.last - a.first + 1;
  EXPECT_EQ(afterSeq, 1 + acked + 1);
  auto log = openLog(dir.path());
  ASSERT_NE(log, nullptr);
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  EXPECT_TRUE(v->indexIntact) << v->indexProblem;
  EXPECT_EQ(v->events, afterSeq);
  auto txn = log->read();
  for (const Ack& a : acks) {
    for (uint64_t s = a.first; s <= a.last; ++s) EXPECT_TRUE((*txn)->get(s).ok()) << s;
  }
}

}  // namespace
}  // namespace imaged::store
