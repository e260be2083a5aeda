#include "daemon/image/apk_file.h"

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

namespace imaged::image {
namespace {

Error corrupt(const std::string& path, const std::string& why) {
  return Error{"E_PACKAGE_CORRUPT", path + ": " + why};
}

std::string digest(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

struct Segment {
  std::string_view compressed;
  std::string data;  // uncompressed
};

// Splits concatenated gzip members, decompressing each (at most kMaxSegmentBytes).
Result<std::vector<Segment>> splitMembers(const std::string& path, std::string_view file) {
  std::vector<Segment> out;
  size_t pos = 0;
  while (pos < file.size()) {
    z_stream z{};
    if (inflateInit2(&z, 15 + 16) != Z_OK) return corrupt(path, "zlib init failed");
    std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&z, inflateEnd);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file.data() + pos));
    z.avail_in = static_cast<uInt>(file.size() - pos);
    Segment seg;
    char buf[1 << 16];
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      rc = inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) {
        return corrupt(path, "gzip segment " + std::to_string(out.size() + 1) + " is damaged" +
                                 (z.msg ? std::string(" (") + z.msg + ")" : ""));
      }
      seg.data.append(buf, sizeof buf - z.avail_out);
      if (seg.data.size() > kMaxSegmentBytes)
        return corrupt(path, "a segment unpacks to more than 4 GiB");
      if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0)
        return corrupt(path, "truncated gzip segment");
    }
    const size_t used = file.size() - pos - z.avail_in;
    seg.compressed = file.substr(pos, used);
    pos += used;
    out.push_back(std::move(seg));
    if (out.size() > 8) return corrupt(path, "more than 8 gzip segments");
  }
  return out;
}

// The name of the first entry of a tar segment.
std::string firstName(std::string_view tar) {
  if (tar.size() < 100) return "";
  return std::string(tar.data(), strnlen(tar.data(), 100));
}

// Reads every entry of a tar held in memory.
Result<std::vector<FileEntry>> readTar(const std::string& path, const std::string& tar) {
  std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  if (archive_read_open_memory(a.get(), tar.data(), tar.size()) != ARCHIVE_OK) {
    return corrupt(path, "data segment is not a tar");
  }
  std::vector<FileEntry> files;
  archive_entry* e = nullptr;
  for (;;) {
    const int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN)
      return corrupt(path,
                     archive_error_string(a.get()) ? archive_error_string(a.get()) : "bad tar");
    if (files.size() >= kMaxEntries) return corrupt(path, "more than 200,000 entries");
    const char* rawName = archive_entry_pathname(e);
    auto name = safeRelativePath(rawName ? rawName : "");
    if (!name.ok()) return corrupt(path, name.error().message);
    FileEntry f;
    f.path = *name;
    f.mode = archive_entry_perm(e) & 07777;
    f.uid = static_cast<uint32_t>(archive_entry_uid(e));
    f.gid = static_cast<uint32_t>(archive_entry_gid(e));
    if (const char* u = archive_entry_uname(e)) f.uname = u;
    if (const char* g = archive_entry_gname(e)) f.gname = g;
    if (const char* hard = archive_entry_hardlink(e)) {
      auto target = safeRelativePath(hard);
      if (!target.ok()) return corrupt(path, "hard link " + f.path + ": " + target.error().message);
      f.type = FileEntry::Type::kHardlink;
      f.link = *target;
    } else {
      switch (archive_entry_filetype(e)) {
        case AE_IFDIR:
          f.type = FileEntry::Type::kDirectory;
          break;
        case AE_IFLNK:
          f.type = FileEntry::Type::kSymlink;
          f.link = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
          break;
        case AE_IFREG:
          f.type = FileEntry::Type::kFile;
          break;
        default:
          return corrupt(path, f.path + " is not a file, directory or link");
      }
    }
    if (f.type == FileEntry::Type::kFile) {
      const la_int64_t size = archive_entry_size(e);
      if (size < 0 || static_cast<uint64_t>(size) > kMaxSegmentBytes)
        return corrupt(path, f.path + ": bad size");
      f.data.resize(static_cast<size_t>(size));
      if (size > 0 && archive_read_data(a.get(), f.data.data(), f.data.size()) != size) {
        return corrupt(path, f.path + ": truncated");
      }
    }
    files.push_back(std::move(f));
  }
  return files;
}

// The .PKGINFO text of a control segment: its first entry (the segment ends without the tar
// end-of-archive blocks, so that the segments read as one archive).
Result<std::string> readPkginfo(const std::string& path, const std::string& tar) {
  if (tar.size() < 512 || firstName(tar) != ".PKGINFO")
    return corrupt(path, "no .PKGINFO in the control segment");
  uint64_t size = 0;
  for (size_t i = 124; i < 136 && tar[i] != '\0' && tar[i] != ' '; ++i) {
    if (tar[i] < '0' || tar[i] > '7') return corrupt(path, ".PKGINFO has a bad size field");
    size = size * 8 + static_cast<uint64_t>(tar[i] - '0');
  }
  if (512 + size > tar.size() || size > (1 << 20))
    return corrupt(path, ".PKGINFO is truncated or too large");
  return tar.substr(512, size);
}

std::string pkginfoField(const std::string& pkginfo, const std::string& key) {
  std::istringstream in(pkginfo);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + " = ", 0) == 0) return line.substr(key.size() + 3);
  }
  return "";
}

}  // namespace

Result<std::string> safeRelativePath(const std::string& raw) {
  if (raw.find('\0') != std::string::npos)
    return Error{"E_PACKAGE_CORRUPT", "a path holds a NUL byte"};
  if (!raw.empty() && raw[0] == '/') return Error{"E_PACKAGE_CORRUPT", "absolute path " + raw};
  std::string out;
  size_t start = 0;
  while (start <= raw.size()) {
    size_t slash = raw.find('/', start);
    if (slash == std::string::npos) slash = raw.size();
    const std::string part = raw.substr(start, slash - start);
    if (part == "..") return Error{"E_PACKAGE_CORRUPT", "path " + raw + " leaves the root"};
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    start = slash + 1;
  }
  if (out.empty()) return Error{"E_PACKAGE_CORRUPT", "empty path"};
  return out;
}

Result<ApkFile> readApk(const std::string& path, const std::string& expectedChecksum) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Error{"E_PACKAGE_MISSING", path + ": the package file is missing"};
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxApkBytes) return corrupt(path, "unreadable or larger than 1 GiB");
  std::string file(size, '\0');
  std::ifstream(path, std::ios::binary).read(file.data(), static_cast<std::streamsize>(size));

  auto segments = splitMembers(path, file);
  if (!segments.ok()) return segments.error();
  const Segment* control = nullptr;
  const Segment* data = nullptr;
  for (const Segment& s : *segments) {
    const std::string name = firstName(s.data);
    if (name.rfind(".SIGN.", 0) == 0) continue;
    if (!control && name == ".PKGINFO") {
      control = &s;
    } else if (control && !data) {
      data = &s;
    }
  }
  if (!control) return corrupt(path, "no control segment with .PKGINFO");
  ApkFile apk;
  apk.controlChecksum = "Q1" + base64(digest(EVP_sha1(), control->compressed));
  if (!expectedChecksum.empty() && apk.controlChecksum != expectedChecksum) {
    return corrupt(path, "control checksum " + apk.controlChecksum +
                             " does not match the index's " + expectedChecksum);
  }
  auto pkginfo = readPkginfo(path, control->data);
  if (!pkginfo.ok()) return pkginfo.error();
  apk.pkginfo = std::move(pkginfo).value();
  if (!data) return apk;  // a package with no files
  apk.dataHash = hex(digest(EVP_sha256(), data->compressed));
  const std::string expected = pkginfoField(apk.pkginfo, "datahash");
  if (!expected.empty() && expected != apk.dataHash) {
    return corrupt(path, "data segment's SHA-256 does not match .PKGINFO's datahash");
  }
  auto files = readTar(path, data->data);
  if (!files.ok()) return files.error();
  apk.files = std::move(files).value();
  return apk;
}

}  // namespace imaged::image
