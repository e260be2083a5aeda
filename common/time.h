// Times as the product shows them: RFC 3339 in UTC, and nanoseconds since the epoch.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>

namespace imaged {

// "2026-12-04T19:40:00Z" for nanoseconds since the epoch; "" for 0. Calendar arithmetic only:
// gmtime_r takes libc's time zone lock and strftime reads the locale, on every call, and every
// image shown formats a few times.
inline std::string formatTime(int64_t unixNanos) {
  if (unixNanos == 0) return "";
  using namespace std::chrono;
  const sys_seconds at{duration_cast<seconds>(nanoseconds{unixNanos})};
  const auto day = floor<days>(at);
  const year_month_day date{day};
  const hh_mm_ss time{at - day};
  int y = static_cast<int>(date.year());
  if (y < 0 || y > 9999) return "";  // not an RFC 3339 year; no event is stamped there
  char out[] = "0000-00-00T00:00:00Z";
  auto put = [&out](size_t at, unsigned value, size_t digits) {
    for (size_t i = digits; i-- > 0; value /= 10) out[at + i] = static_cast<char>('0' + value % 10);
  };
  put(0, static_cast<unsigned>(y), 4);
  put(5, static_cast<unsigned>(date.month()), 2);
  put(8, static_cast<unsigned>(date.day()), 2);
  put(11, static_cast<unsigned>(time.hours().count()), 2);
  put(14, static_cast<unsigned>(time.minutes().count()), 2);
  put(17, static_cast<unsigned>(time.seconds().count()), 2);
  return std::string(out, sizeof out - 1);
}

// Parses RFC 3339 ("2026-11-01", "2026-11-01T00:00:00Z", with an offset or fractions) into
// nanoseconds since the epoch; nullopt when it does not parse.
inline std::optional<int64_t> parseTime(const std::string& text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%n", &y, &mo, &d, &consumed) != 3 || consumed != 10) {
    return std::nullopt;
  }
  size_t pos = 10;
  int64_t offsetSeconds = 0;
  int64_t nanos = 0;
  if (pos < text.size()) {
    if (text[pos] != 'T' && text[pos] != 't' && text[pos] != ' ') return std::nullopt;
    int n = 0;
    if (std::sscanf(text.c_str() + pos + 1, "%2d:%2d:%2d%n", &h, &mi, &s, &n) != 3 || n != 8) {
      return std::nullopt;
    }
    pos += 9;
    if (pos < text.size() && text[pos] == '.') {
      int64_t scale = 100'000'000;
      for (++pos; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos) {
        nanos += (text[pos] - '0') * scale;
        scale /= 10;
      }
    }
    if (pos < text.size()) {
      if (text[pos] == 'Z' || text[pos] == 'z') {
        ++pos;
      } else if (text[pos] == '+' || text[pos] == '-') {
        int oh = 0, om = 0, n2 = 0;
        if (std::sscanf(text.c_str() + pos + 1, "%2d:%2d%n", &oh, &om, &n2) != 2 || n2 != 5) {
          return std::nullopt;
        }
        offsetSeconds = (text[pos] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
        pos += 6;
      }
    }
    if (pos != text.size()) return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  const int64_t secs = static_cast<int64_t>(timegm(&tm)) - offsetSeconds;
  return secs * 1'000'000'000 + nanos;
}

// For "as of TIME" questions: a time given to the second covers that whole second, so that
// "--at 2026-12-04T19:40:00Z" includes what happened during 19:40:00.
inline std::optional<int64_t> parseTimeAsOf(const std::string& text) {
  auto t = parseTime(text);
  if (t && text.find('.') == std::string::npos) *t += 999'999'999;
  return t;
}

}  // namespace imaged
