#include "daemon/image/oci.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

namespace imaged::image {
namespace {

la_ssize_t appendToString(archive*, void* client, const void* buffer, size_t length) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

// One gzip member of `data`: zlib writes time 0 and no name, so the bytes depend on the data.
Result<std::string> gzipMember(std::string_view data) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return Error{"E_IMAGE_WRITE", "zlib init failed"};
  }
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&z, deflateEnd);
  std::string out;
  out.resize(deflateBound(&z, data.size()) + 64);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) return Error{"E_IMAGE_WRITE", "gzip failed"};
  out.resize(z.total_out);
  return out;
}

// gzip as concatenated members of fixed-size chunks, compressed in parallel (a valid gzip
// stream, which every reader of layers decompresses whole). The chunk size, not the number of
// threads, decides the bytes: the same data gives the same blob on any machine.
Result<std::string> gzip(const std::string& data) {
  constexpr size_t kChunk = 8 << 20;
  const size_t chunks = std::max<size_t>(1, (data.size() + kChunk - 1) / kChunk);
  std::vector<Result<std::string>> parts(chunks, Error{"E_IMAGE_WRITE", "not compressed"});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < chunks;) {
      parts[i] = gzipMember(std::string_view(data).substr(i * kChunk, kChunk));
    }
  };
  const size_t threads =
      std::min<size_t>(chunks, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  std::string out;
  for (auto& p : parts) {
    if (!p.ok()) return p.error();
    out += *p;
  }
  return out;
}

}  // namespace

Result<Layer> writeLayer(std::vector<FileEntry> files, int64_t mtime) {
  // Parents first, then by path: a sorted list of paths does both.
  std::set<std::string> present;
  for (const FileEntry& f : files) present.insert(f.path);
  for (size_t i = 0, n = files.size(); i < n; ++i) {
    std::string p = files[i].path;
    for (size_t slash = p.rfind('/'); slash != std::string::npos; slash = p.rfind('/')) {
      p = p.substr(0, slash);
      if (!present.insert(p).second) break;
      FileEntry dir;
      dir.path = p;
      dir.type = FileEntry::Type::kDirectory;
      dir.mode = 0755;
      dir.uname = dir.gname = "root";
      files.push_back(std::move(dir));
    }
  }
  std::stable_sort(files.begin(), files.end(),
                   [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });

  std::string tar;
  std::unique_ptr<archive, decltype(&archive_write_free)> a(archive_write_new(),
                                                            archive_write_free);
  archive_write_set_format_pax_restricted(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_open(a.get(), &tar, nullptr, appendToString, nullptr) != ARCHIVE_OK) {
    return Error{"E_IMAGE_WRITE", "cannot start the layer tar"};
  }
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(),
                                                                  archive_entry_free);
  for (const FileEntry& f : files) {
    archive_entry_clear(e.get());
    archive_entry_set_pathname(e.get(), f.path.c_str());
    archive_entry_set_uid(e.get(), f.uid);
    archive_entry_set_gid(e.get(), f.gid);
    if (!f.uname.empty()) archive_entry_set_uname(e.get(), f.uname.c_str());
    if (!f.gname.empty()) archive_entry_set_gname(e.get(), f.gname.c_str());
    archive_entry_set_mtime(e.get(), mtime, 0);
    archive_entry_set_perm(e.get(), f.mode);
    switch (f.type) {
      case FileEntry::Type::kDirectory:
        archive_entry_set_filetype(e.get(), AE_IFDIR);
        break;
      case FileEntry::Type::kSymlink:
        archive_entry_set_filetype(e.get(), AE_IFLNK);
        archive_entry_set_symlink(e.get(), f.link.c_str());
        break;
      case FileEntry::Type::kHardlink:
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_hardlink(e.get(), f.link.c_str());
        break;
      case FileEntry::Type::kFile:
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_size(e.get(), static_cast<la_int64_t>(f.data.size()));
        break;
    }
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) {
      return Error{
          "E_IMAGE_WRITE",
          f.path + ": " + (archive_error_string(a.get()) ? archive_error_string(a.get()) : "")};
    }
    if (f.type == FileEntry::Type::kFile && !f.data.empty() &&
        archive_write_data(a.get(), f.data.data(), f.data.size()) !=
            static_cast<la_ssize_t>(f.data.size())) {
      return Error{"E_IMAGE_WRITE", f.path + ": short write"};
    }
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    return Error{"E_IMAGE_WRITE", "cannot finish the layer tar"};
  auto compressed = gzip(tar);
  if (!compressed.ok()) return compressed.error();
  return Layer{std::move(compressed).value(), sha256Digest(tar)};
}

std::string configJson(const ImageConfig& c, const std::vector<std::string>& diffIds) {
  nlohmann::json env = nlohmann::json::array();
  for (const auto& [k, v] : c.env) env.push_back(k + "=" + v);
  nlohmann::json config = {{"Env", env}, {"Labels", c.labels}};
  if (!c.entrypoint.empty()) config["Entrypoint"] = c.entrypoint;
  if (!c.cmd.empty()) config["Cmd"] = c.cmd;
  if (!c.user.empty()) config["User"] = c.user;
  if (!c.workdir.empty()) config["WorkingDir"] = c.workdir;
  nlohmann::json j = {{"architecture", "amd64"},
                      {"os", "linux"},
                      {"config", config},
                      {"rootfs", {{"type", "layers"}, {"diff_ids", diffIds}}}};
  if (!c.created.empty()) j["created"] = c.created;
  return j.dump();
}

std::string manifestJson(const Descriptor& config, const std::vector<Descriptor>& layers) {
  auto desc = [](const Descriptor& d) {
    return nlohmann::json{{"mediaType", d.mediaType}, {"digest", d.digest}, {"size", d.size}};
  };
  nlohmann::json list = nlohmann::json::array();
  for (const auto& l : layers) list.push_back(desc(l));
  return nlohmann::json{{"schemaVersion", 2},
                        {"mediaType", kManifestMediaType},
                        {"config", desc(config)},
                        {"layers", list}}
      .dump();
}

std::string BlobStore::pathOf(const std::string& digest) const {
  const std::string hex = digest.rfind("sha256:", 0) == 0 ? digest.substr(7) : digest;
  return dir_ + "/sha256/" + hex;
}

bool BlobStore::has(const std::string& digest) const {
  std::error_code ec;
  return std::filesystem::exists(pathOf(digest), ec);
}

Result<Descriptor> BlobStore::put(std::string_view bytes, const std::string& mediaType) {
  Descriptor d{mediaType, sha256Digest(bytes), bytes.size()};
  const std::string path = pathOf(d.digest);
  if (refresh(d.digest)) return d;  // already there: reused, so no longer collectable
  std::error_code ec;
  std::filesystem::create_directories(dir_ + "/sha256", ec);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(reinterpret_cast<uintptr_t>(&d));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error{"E_IMAGE_WRITE", "cannot write " + tmp};
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return Error{"E_IMAGE_WRITE", "writing a blob failed (disk full?)"};
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Error{"E_IMAGE_WRITE", "cannot store blob " + d.digest};
  }
  return d;
}

bool BlobStore::refresh(const std::string& digest) {
  std::lock_guard lk(reuseMutex_);
  return ::utimensat(AT_FDCWD, pathOf(digest).c_str(), nullptr, 0) == 0;
}

std::optional<uint64_t> BlobStore::removeIfOlder(const std::string& digest,
                                                 std::chrono::seconds age) {
  std::lock_guard lk(reuseMutex_);
  const std::string path = pathOf(digest);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  const auto mtime = std::chrono::system_clock::time_point(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec));
  if (std::chrono::system_clock::now() - mtime < age) return std::nullopt;
  if (::unlink(path.c_str()) != 0) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

std::optional<BlobStore::Derived> BlobStore::derived(const std::string& key, bool* recent) const {
  std::lock_guard lk(cacheMutex_);
  auto it = derived_.find(key);
  if (it == derived_.end()) return std::nullopt;
  if (recent) {
    *recent = recheckAfter_.count() > 0 && it->second.checked.time_since_epoch().count() != 0 &&
              std::chrono::steady_clock::now() - it->second.checked < recheckAfter_;
  }
  return it->second.derived;
}

void BlobStore::markChecked(const std::string& key) {
  std::lock_guard lk(cacheMutex_);
  if (auto it = derived_.find(key); it != derived_.end()) {
    it->second.checked = std::chrono::steady_clock::now();
  }
}

void BlobStore::remember(const std::string& key, Derived derived) {
  std::lock_guard lk(cacheMutex_);
  if (!derived_.emplace(key, Entry{std::move(derived), {}}).second) return;
  derivedOrder_.push_back(key);
  if (derivedOrder_.size() > kMaxDerived) {
    derived_.erase(derivedOrder_.front());
    derivedOrder_.pop_front();
  }
}

bool BlobStore::refreshAll(const Derived& derived) {
  for (const Descriptor& d : derived.blobs) {
    if (!refresh(d.digest)) return false;
  }
  return true;
}

Result<std::string> BlobStore::read(const std::string& digest) const {
  std::ifstream in(pathOf(digest), std::ios::binary);
  if (!in) return Error{"E_NOT_FOUND", "no blob " + digest};
  std::string data((std::istreambuf_iterator<char>(in)), {});
  if (sha256Digest(data) != digest)
    return Error{"E_STORE_CORRUPT", "blob " + digest + " does not match its digest"};
  return data;
}

Status writeLayout(const BlobStore& blobs,
                   const std::vector<std::pair<std::string, Descriptor>>& taggedManifests,
                   const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir + "/blobs/sha256", ec);
  if (ec) return Error{"E_IMAGE_WRITE", "cannot create " + dir + ": " + ec.message()};
  auto copy = [&](const std::string& digest) -> Result<std::string> {
    auto data = blobs.read(digest);
    if (!data.ok()) return data.error();
    const std::string path = dir + "/blobs/sha256/" + digest.substr(7);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << *data;
    if (!out) return Error{"E_IMAGE_WRITE", "cannot write " + path};
    return data;
  };
  nlohmann::json manifests = nlohmann::json::array();
  for (const auto& [tag, manifest] : taggedManifests) {
    auto m = copy(manifest.digest);
    if (!m.ok()) return m.error();
    auto parsed = nlohmann::json::parse(*m, nullptr, false);
    if (parsed.is_discarded())
      return Error{"E_STORE_CORRUPT", "manifest " + manifest.digest + " is not JSON"};
    if (auto c = copy(parsed["config"]["digest"]); !c.ok()) return c.error();
    for (const auto& layer : parsed["layers"]) {
      if (auto l = copy(layer["digest"]); !l.ok()) return l.error();
    }
    manifests.push_back({{"mediaType", manifest.mediaType},
                         {"digest", manifest.digest},
                         {"size", manifest.size},
                         {"annotations", {{"org.opencontainers.image.ref.name", tag}}}});
  }
  std::ofstream(dir + "/oci-layout") << R"({"imageLayoutVersion":"1.0.0"})";
  std::ofstream(dir + "/index.json")
      << nlohmann::json{{"schemaVersion", 2}, {"manifests", manifests}}.dump();
  return Ok{};
}

}  // namespace imaged::image
