// The projection's rules, applied to a scripted history in a real log (tests/domain/history.h).
#include "daemon/domain/projection.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include "daemon/domain/events.h"

#include "tests/domain/history.h"

namespace imaged::domain {
namespace {

using testing::History;
using testing::TempDir;

class ProjectionTest : public ::testing::Test {
 protected:
  TempDir dir;
  History history{dir.path()};
  Projection state = history.replay(history.last());
};

TEST_F(ProjectionTest, AnEditSupersedesTheRunningBuildAndTheNewBuildDecidesTagsAndStatus) {
  const ImageState* web = state.find("acme", "web");
  ASSERT_NE(web, nullptr);
  ASSERT_EQ(web->builds.size(), 3u);
  EXPECT_EQ(web->builds[1].status, BuildStatus::kCancelled);
  EXPECT_EQ(web->builds[1].errorCode, "E_SUPERSEDED");
  EXPECT_EQ(web->builds[2].status, BuildStatus::kSucceeded);
  EXPECT_EQ(web->status(), "created");
  EXPECT_EQ(web->description, "edited");
  EXPECT_EQ(web->packages, (std::vector<std::string>{"py3-flask", "py3-requests"}));
  EXPECT_EQ(web->env.size(), 2u);
  const auto tags = web->tags();
  EXPECT_EQ(tags.at("latest"), "3.13.1");
  EXPECT_EQ(tags.at("3.12"), "3.12.8");
  EXPECT_EQ(web->builds[2].lines[1].digest(), "sha256:m4");
}

TEST_F(ProjectionTest, CreatedAtIsTheEndOfTheFirstSuccessfulBuildOnly) {
  const ImageState* web = state.find("acme", "web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->createdAt, web->builds[0].endedAt);
  EXPECT_LT(web->createdAt, web->builds[2].endedAt);
}

TEST_F(ProjectionTest, ADeletedNameCanBeReusedAndTheNextImageGetsANewStream) {
  const ImageState* api = state.find("acme", "api");
  ASSERT_NE(api, nullptr);
  EXPECT_EQ(api->streamId, "image/acme/api/2");
  EXPECT_EQ(state.nextStreamId("acme", "api"), "image/acme/api/3");
  const ImageState* old = state.byStream("image/acme/api/1");
  ASSERT_NE(old, nullptr);
  EXPECT_TRUE(old->deleted);
  EXPECT_EQ(old->status(), "failed");
  EXPECT_EQ(old->latestBuild()->errorCode, "E_NO_BUILDABLE_LINE");
  EXPECT_TRUE(old->tags().empty());
}

TEST_F(ProjectionTest, TheLastImageOfANameIsTheLiveOneElseTheLastDeleted) {
  EXPECT_EQ(state.lastOfName("acme", "api"), state.find("acme", "api"));
  EXPECT_EQ(state.lastOfName("acme", "nothing"), nullptr);
  EXPECT_EQ(state.lastOfName("globex", "api"), nullptr);  // another tenant's name
  // Between the delete of api/1 and the creation of api/2: no live api, the deleted one is last.
  uint64_t deletedAt = 0;
  for (uint64_t seq = 1; seq <= history.last() && deletedAt == 0; ++seq) {
    Projection p = history.replay(seq);
    if (p.byStream("image/acme/api/1") && p.byStream("image/acme/api/1")->deleted) deletedAt = seq;
  }
  ASSERT_NE(deletedAt, 0u);
  Projection between = history.replay(deletedAt);
  EXPECT_EQ(between.find("acme", "api"), nullptr);
  const ImageState* last = between.lastOfName("acme", "api");
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->streamId, "image/acme/api/1");
  EXPECT_TRUE(last->deleted);
}

TEST_F(ProjectionTest, TenantsSeeOnlyTheirOwnGallery) {
  ASSERT_EQ(state.gallery("acme").size(), 2u);
  ASSERT_EQ(state.gallery("globex").size(), 1u);
  EXPECT_EQ(state.gallery("globex")[0]->status(), "in-progress");
  EXPECT_EQ(state.find("globex", "api"), nullptr);
  EXPECT_EQ(state.tenants(), (std::vector<std::string>{"acme", "globex"}));
}

TEST_F(ProjectionTest, AnIdempotencyKeyFindsTheImageItCreated) {
  const ImageState* i = state.byIdempotencyKey("create/acme/k1");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->streamId, "image/acme/web/1");
  EXPECT_EQ(state.byIdempotencyKey("create/acme/other"), nullptr);
}

TEST_F(ProjectionTest, TheLatestCatalogRecordedIsInForce) {
  EXPECT_EQ(state.catalog().digest, "sha256:c2");
  EXPECT_EQ(state.catalog().starters.size(), 2u);
  EXPECT_EQ(state.find("globex", "web")->latestBuild()->catalogDigest, "sha256:c2");
}

// An event applied straight to a projection, outside any log.
void applyTo(Projection& p, uint64_t sequence, const std::string& stream, uint64_t version,
             const events::Payload& payload) {
  capnp::FlatArrayMessageReader payloadReader(payload.asPtr());
  capnp::MallocMessageBuilder b;
  auto e = b.initRoot<schema::Event>();
  e.setSequence(sequence);
  e.setStreamId(stream);
  e.setStreamVersion(version);
  e.setTime(static_cast<int64_t>(sequence));
  e.setPayload(payloadReader.getRoot<schema::Payload>());
  p.apply(e.asReader());
}

TEST(Projection, ASecondCreationOfAStreamIsSkipped) {
  Projection p;
  const std::string stream = "image/acme/web/1";
  applyTo(p, 1, stream, 1, events::imageCreated("acme", "web", "first", "python", {}, {}));
  // Never written by imaged; a log that has it keeps the first image, whole.
  applyTo(p, 2, stream, 2, events::imageCreated("acme", "other", "second", "node", {}, {}));
  const ImageState* web = p.find("acme", "web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->description, "first");
  EXPECT_EQ(web->starter, "python");
  EXPECT_EQ(p.find("acme", "other"), nullptr);
  EXPECT_EQ(p.byStream(stream), web);
  EXPECT_EQ(p.gallery("acme").size(), 1u);
  EXPECT_EQ(p.nextStreamId("acme", "web"), "image/acme/web/2");
}

TEST_F(ProjectionTest, ReplayIsDeterministic) {
  EXPECT_EQ(testing::describe(history.replay(history.last())), testing::describe(state));
  EXPECT_NE(testing::describe(history.replay(history.last() - 1)), testing::describe(state));
}

}  // namespace
}  // namespace imaged::domain
