// Times as the product shows them (common/time.h).
#include <gtest/gtest.h>

#include <ctime>
#include <limits>
#include <random>

#include "common/time.h"

namespace imaged {
namespace {

// What formatTime must agree with: libc's calendar.
std::string reference(int64_t unixNanos) {
  const time_t secs = static_cast<time_t>(unixNanos / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

TEST(Time, FormatsAsLibcDoesAcrossDaysMonthsAndLeapYears) {
  EXPECT_EQ(formatTime(0), "");
  EXPECT_EQ(formatTime(1'796'413'200'000'000'000), "2026-12-04T19:40:00Z");
  EXPECT_EQ(formatTime(951'782'400'000'000'000), "2000-02-29T00:00:00Z");  // a leap day
  EXPECT_EQ(formatTime(1'999'999'999), "1970-01-01T00:00:01Z");            // fractions dropped
  std::mt19937_64 rng(42);
  // Every day boundary from 1970 to 2134, and random instants up to 2262 (int64 ns).
  for (int64_t day = 0; day < 60'000; ++day) {
    for (int64_t second : {int64_t{0}, int64_t{86'399}}) {
      const int64_t t = (day * 86'400 + second) * 1'000'000'000;
      if (t == 0) continue;  // "": no time
      ASSERT_EQ(formatTime(t), reference(t)) << t;
    }
  }
  std::uniform_int_distribution<int64_t> any(1, std::numeric_limits<int64_t>::max());  // to 2262
  for (int i = 0; i < 100'000; ++i) {
    const int64_t t = any(rng);
    ASSERT_EQ(formatTime(t), reference(t)) << t;
  }
}

TEST(Time, ParsesWhatItFormats) {
  for (int64_t t :
       {int64_t{1}, int64_t{951'782'400}, int64_t{1'796'413'200}, int64_t{4'102'444'800}}) {
    const auto text = formatTime(t * 1'000'000'000);
    EXPECT_EQ(parseTime(text), t * 1'000'000'000) << text;
  }
}

}  // namespace
}  // namespace imaged
