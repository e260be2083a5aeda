#include "daemon/catalog/tags.h"

#include <gtest/gtest.h>

namespace imaged::catalog {
namespace {

using Tags = std::map<std::string, std::string>;

TEST(Tags, TheSeedsExampleLatestAndMajorFollowTheBuiltLineWhenANewerOneIsSkipped) {
  // Line 8.4 was skipped; 8.3 and 8.2 built.
  auto tags = deriveTags({{"8.3", "8.3.14"}, {"8.2", "8.2.26"}});
  EXPECT_EQ(tags, (Tags{{"latest", "8.3.14"},
                        {"8", "8.3.14"},
                        {"8.3", "8.3.14"},
                        {"8.3.14", "8.3.14"},
                        {"8.2", "8.2.26"},
                        {"8.2.26", "8.2.26"}}));
}

TEST(Tags, EveryLineGetsItsFullAndMinorTagsAndTheNewestTakesLatest) {
  auto tags = deriveTags({{"3.13", "3.13.1"}, {"3.12", "3.12.8"}, {"3.11", "3.11.10"}});
  EXPECT_EQ(tags.at("latest"), "3.13.1");
  EXPECT_EQ(tags.at("3"), "3.13.1");
  EXPECT_EQ(tags.at("3.13"), "3.13.1");
  EXPECT_EQ(tags.at("3.12"), "3.12.8");
  EXPECT_EQ(tags.at("3.11.10"), "3.11.10");
  EXPECT_EQ(tags.size(), 8u);
}

TEST(Tags, OrderIsNumericPerDottedPart) {
  auto tags = deriveTags({{"3.9", "3.9.20"}, {"3.10", "3.10.2"}});
  EXPECT_EQ(tags.at("latest"), "3.10.2");
  EXPECT_EQ(tags.at("3"), "3.10.2");
}

TEST(Tags, EachMajorPointsAtItsOwnMostAdvancedLine) {
  auto tags = deriveTags({{"22", "22.11.0"}, {"20", "20.18.1"}, {"18", "18.20.5"}});
  EXPECT_EQ(tags.at("latest"), "22.11.0");
  EXPECT_EQ(tags.at("22"), "22.11.0");
  EXPECT_EQ(tags.at("20"), "20.18.1");
  EXPECT_EQ(tags.at("18.20"), "18.20.5");
}

TEST(Tags, AFullVersionTagWinsOverAFloatingOneOfTheSameName) {
  auto tags = deriveTags({{"3", "3"}, {"3.1", "3.1.4"}});
  EXPECT_EQ(tags.at("3"), "3");
  EXPECT_EQ(tags.at("latest"), "3.1.4");
  EXPECT_EQ(tags.at("3.1"), "3.1.4");
}

TEST(Tags, NoBuiltLinesNoTags) {
  EXPECT_TRUE(deriveTags({}).empty());
}

TEST(Tags, OnlyMaintainedLinesAreBuiltEachAtItsProductionVersion) {
  Starter s;
  s.name = "php";
  StarterLine l84{"8.4", true, {}, {{"8.4.1", "", {}}, {"8.4.0", "", {}}}};
  StarterLine l83{"8.3", true, {}, {{"8.3.14", "", {}}}};
  StarterLine l74{"7.4", false, {}, {{"7.4.33", "", {}}}};
  s.lines = {l84, l83, l74};
  auto lines = buildableLines(s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].line, "8.4");
  EXPECT_EQ(lines[0].version, "8.4.1");
  EXPECT_EQ(lines[1].version, "8.3.14");
}

}  // namespace
}  // namespace imaged::catalog
