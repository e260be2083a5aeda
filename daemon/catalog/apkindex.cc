#include "daemon/catalog/apkindex.h"

#include <archive.h>
#include <archive_entry.h>

#include <charconv>
#include <memory>

#include "daemon/catalog/version.h"

namespace imaged::catalog {
namespace {

// Splits a space-separated field into its words.
template <typename Fn>
void forEachWord(std::string_view s, Fn&& fn) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) fn(s.substr(i, j - i));
    i = j;
  }
}

template <typename Int>
bool parseNumber(std::string_view s, Int* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

class RecordBuilder {
 public:
  RecordBuilder(std::string_view file, ParsedIndex* out) : file_(file), out_(out) {}

  void start(size_t line) {
    record_ = PackageRecord{};
    record_.line = line;
    error_.clear();
    errorLine_ = 0;
    open_ = true;
  }
  bool open() const { return open_; }

  void fail(size_t line, std::string message) {
    if (error_.empty()) {
      error_ = std::move(message);
      errorLine_ = line;
    }
  }

  void field(char key, std::string_view value, size_t line) {
    if (!error_.empty()) return;
    auto setOnce = [&](std::string& slot, const char* what) {
      if (!slot.empty()) return fail(line, std::string("second ") + what + " field");
      slot = std::string(value);
    };
    switch (key) {
      case 'P':
        if (!isValidPackageName(value)) return fail(line, "invalid package name");
        return setOnce(record_.name, "P:");
      case 'V':
        if (value.size() > kMaxVersionBytes || !isValidVersion(value)) {
          return fail(line, "'" + std::string(value.substr(0, 40)) + "' is not an apk version");
        }
        return setOnce(record_.version, "V:");
      case 'A':
        return setOnce(record_.arch, "A:");
      case 'T':
        record_.description = std::string(value);
        return;
      case 'L':
        record_.license = std::string(value);
        return;
      case 'U':
        record_.url = std::string(value);
        return;
      case 'o':
        record_.origin = std::string(value);
        return;
      case 'C':
        record_.checksum = std::string(value);
        return;
      case 'S':
        if (!parseNumber(value, &record_.size)) fail(line, "S: is not a number");
        return;
      case 'I':
        if (!parseNumber(value, &record_.installedSize)) fail(line, "I: is not a number");
        return;
      case 'k':
        if (!parseNumber(value, &record_.providerPriority)) fail(line, "k: is not a number");
        return;
      case 'D':
      case 'i':
        forEachWord(value, [&](std::string_view word) {
          auto atom = parseAtom(word);
          if (!atom.ok()) return fail(line, std::string(1, key) + ": " + atom.error().message);
          (key == 'D' ? record_.depends : record_.installIf).push_back(std::move(atom).value());
        });
        return;
      case 'p':
        forEachWord(value, [&](std::string_view word) {
          auto provide = parseProvide(word);
          if (!provide.ok()) return fail(line, "p: " + provide.error().message);
          record_.provides.push_back(std::move(provide).value());
        });
        return;
      default:
        return;  // unknown fields are ignored, never rejected
    }
  }

  void finish() {
    if (!open_) return;
    open_ = false;
    if (error_.empty() && record_.name.empty()) fail(record_.line, "record has no P: field");
    if (error_.empty() && record_.version.empty()) fail(record_.line, "record has no V: field");
    if (!error_.empty()) {
      std::string what = record_.name.empty() ? "record" : "record " + record_.name;
      out_->problems.push_back({std::string(file_), errorLine_, what + " skipped: " + error_});
      return;
    }
    if (out_->records.size() >= kMaxRecords) {
      out_->problems.push_back(
          {std::string(file_), record_.line, "more than 2,000,000 records; the rest skipped"});
      return;
    }
    out_->records.push_back(std::move(record_));
  }

 private:
  std::string_view file_;
  ParsedIndex* out_;
  PackageRecord record_;
  std::string error_;
  size_t errorLine_ = 0;
  bool open_ = false;
};

}  // namespace

ParsedIndex parseApkIndex(std::string_view text, std::string_view file) {
  ParsedIndex out;
  RecordBuilder builder(file, &out);
  size_t lineNo = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++lineNo;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      builder.finish();
      continue;
    }
    if (!builder.open()) builder.start(lineNo);
    if (line.size() < 2 || line[1] != ':') {
      builder.fail(lineNo, "line is not 'X:value'");
      continue;
    }
    if (line.size() - 2 > kMaxFieldBytes) {
      builder.fail(lineNo, std::string("field ") + line[0] + ": is longer than 64 KiB");
      continue;
    }
    builder.field(line[0], line.substr(2), lineNo);
  }
  builder.finish();
  return out;
}

Result<std::string> readIndexArchive(const std::string& path) {
  auto invalid = [](const std::string& why) { return Error{"E_CATALOG_INVALID", why}; };
  std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(), archive_read_free);
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), path.c_str(), 64 << 10) != ARCHIVE_OK) {
    return invalid(archive_error_string(a.get()) ? archive_error_string(a.get()) : "cannot open");
  }
  archive_entry* entry = nullptr;
  for (;;) {
    int rc = archive_read_next_header(a.get(), &entry);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) {
      return invalid(archive_error_string(a.get()) ? archive_error_string(a.get())
                                                   : "not a tar.gz");
    }
    const char* name = archive_entry_pathname(entry);
    if (!name || std::string_view(name) != "APKINDEX") continue;
    if (archive_entry_size_is_set(entry) &&
        static_cast<uint64_t>(archive_entry_size(entry)) > kMaxIndexBytes) {
      return invalid("APKINDEX is larger than 256 MiB");
    }
    std::string text;
    char buf[64 << 10];
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
      if (n < 0)
        return invalid(archive_error_string(a.get()) ? archive_error_string(a.get())
                                                     : "read error");
      if (n == 0) break;
      if (text.size() + static_cast<size_t>(n) > kMaxIndexBytes) {
        return invalid("APKINDEX is larger than 256 MiB");
      }
      text.append(buf, static_cast<size_t>(n));
    }
    return text;
  }
  return invalid("no APKINDEX member");
}

}  // namespace imaged::catalog
