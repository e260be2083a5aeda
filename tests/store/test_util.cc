#include "test_util.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <lmdb.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace imaged::store::testing {

kj::Array<capnp::word> payload(const std::string& text) {
  capnp::MallocMessageBuilder b;
  b.initRoot<schema::Payload>().initImageDeleted().setReason(text);
  return capnp::messageToFlatArray(b);
}

AppendRequest request(const std::string& stream, size_t n, const std::string& tag,
                      ExpectedVersion expected) {
  AppendRequest r;
  r.streamId = stream;
  r.expected = expected;
  r.actor = Actor{"acme", 1000, "test"};
  r.correlationId = "corr-" + tag;
  for (size_t i = 0; i < n; ++i) r.payloads.push_back(payload(tag + "-" + std::to_string(i)));
  return r;
}

Decoded decode(kj::ArrayPtr<const capnp::word> words) {
  capnp::FlatArrayMessageReader reader(words);
  auto ev = reader.getRoot<schema::Event>();
  return Decoded{ev.getSequence(), ev.getStreamId(), ev.getStreamVersion(), ev.getTime(),
                 ev.getPayload().getImageDeleted().getReason()};
}

void editRaw(const std::string& path, const char* database,
             const std::function<void(MDB_txn*, unsigned dbi)>& fn) {
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  ASSERT_EQ(mdb_env_open(env, path.c_str(), 0, 0600), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dbi;
  ASSERT_EQ(mdb_dbi_open(txn, database, 0, &dbi), 0);
  fn(txn, dbi);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

std::unique_ptr<EventLog> openLog(const std::string& path, bool readOnly, size_t initialMapSize) {
  EventLog::Options o;
  o.path = path;
  o.readOnly = readOnly;
  o.initialMapSize = initialMapSize;
  auto log = EventLog::open(std::move(o));
  if (!log.ok()) {
    ADD_FAILURE() << "open " << path << ": " << log.error().code << " " << log.error().message;
    return nullptr;
  }
  return std::move(log).value();
}

}  // namespace imaged::store::testing

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace imaged::store::testing {

Child::Child(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  fd_ = fds[0];
}

Child::~Child() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    wait();
  }
  if (fd_ >= 0) close(fd_);
}

bool Child::readLine(std::string* line) {
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      *line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return true;
    }
    char chunk[4096];
    ssize_t n = ::read(fd_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

void Child::kill(int signal) {
  ::kill(pid_, signal);
}

int Child::wait() {
  if (!reaped_) {
    while (waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  return status_;
}

}  // namespace imaged::store::testing
