// ResolutionMemo: the same answers as the resolver, once per question and catalog object.
#include "daemon/domain/build.h"

#include <gtest/gtest.h>

namespace imaged::domain {
namespace {

const std::string kSample = std::string(IMAGED_SOURCE_DIR) + "/catalog/sample";

catalog::LineRequest pythonLine(const catalog::Catalog& c, const std::string& line,
                                const std::vector<std::string>& added) {
  const catalog::Starter* s = c.findStarter("python");
  for (const catalog::StarterLine& l : s->lines) {
    if (l.line != line) continue;
    std::vector<catalog::Atom> atoms;
    for (const auto& a : added) atoms.push_back(*catalog::parseAtom(a));
    return {l.line, l.production().packages, atoms};
  }
  ADD_FAILURE() << "no python line " << line;
  return {};
}

void expectSame(const catalog::LineResolution& a, const catalog::LineResolution& b) {
  EXPECT_EQ(a.ok(), b.ok());
  if (!a.ok() && !b.ok()) {
    EXPECT_EQ(a.error->code, b.error->code);
    EXPECT_EQ(a.error->message, b.error->message);
  }
  EXPECT_EQ(a.packages, b.packages);
}

TEST(ResolutionMemo, AnswersAsTheResolverOncePerQuestionAndCatalog) {
  auto c = *catalog::Catalog::load(kSample);
  ResolutionMemo memo;
  const auto flask313 = pythonLine(*c, "3.13", {"py3-flask"});
  const auto flask311 = pythonLine(*c, "3.11", {"py3-flask"});  // skipped: no flask for 3.11
  expectSame(memo.resolve(c, flask313), catalog::resolveLine(*c, flask313));
  EXPECT_EQ(memo.size(), 1u);
  expectSame(memo.resolve(c, flask313), catalog::resolveLine(*c, flask313));
  EXPECT_EQ(memo.size(), 1u) << "asked again: answered from the memo";
  auto skipped = memo.resolve(c, flask311);
  EXPECT_FALSE(skipped.ok());
  expectSame(skipped, catalog::resolveLine(*c, flask311));
  EXPECT_EQ(memo.size(), 2u);
  // Another added package is another question.
  const auto plain313 = pythonLine(*c, "3.13", {});
  expectSame(memo.resolve(c, plain313), catalog::resolveLine(*c, plain313));
  EXPECT_EQ(memo.size(), 3u);

  // Another catalog object (even of the same files): its package ids are its own, so the memo
  // starts again for it.
  auto again = *catalog::Catalog::load(kSample);
  const auto flask313again = pythonLine(*again, "3.13", {"py3-flask"});
  expectSame(memo.resolve(again, flask313again), catalog::resolveLine(*again, flask313again));
  EXPECT_EQ(memo.size(), 1u);
}

}  // namespace
}  // namespace imaged::domain
