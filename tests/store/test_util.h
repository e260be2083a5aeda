// Helpers shared by the store's tests: temporary directories and payload builders.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <sys/types.h>

#include <capnp/common.h>
#include <kj/array.h>

#include "store/event_log.h"
#include "tests/common/temp_dir.h"

namespace imaged::store::testing {

using imaged::testing::TempDir;

// A Payload message (an imageDeleted event whose reason is `text`), flat.
kj::Array<capnp::word> payload(const std::string& text);

// A request of `n` events with reasons "<tag>-0", "<tag>-1", ...
AppendRequest request(const std::string& stream, size_t n = 1, const std::string& tag = "e",
                      ExpectedVersion expected = ExpectedVersion::any());

// Decoded envelope fields of a stored event, for assertions.
struct Decoded {
  uint64_t sequence;
  std::string streamId;
  uint64_t streamVersion;
  int64_t time;
  std::string reason;  // the payload's imageDeleted.reason
};
Decoded decode(kj::ArrayPtr<const capnp::word> words);

std::unique_ptr<EventLog> openLog(const std::string& path, bool readOnly = false,
                                  size_t initialMapSize = size_t{1} << 30);

// Edits one database of the raw LMDB environment at `path` (the log must be closed) in a write
// transaction, to damage a store on purpose.
void editRaw(const std::string& path, const char* database,
             const std::function<void(MDB_txn*, unsigned dbi)>& fn);

}  // namespace imaged::store::testing

namespace imaged::store::testing {

// A child process with its stdout on a pipe, killed (SIGKILL) and reaped on destruction.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line of the child's stdout without its newline; false at end of file.
  bool readLine(std::string* line);
  void kill(int signal);
  // Waits for the child to end; returns its exit status as waitpid gives it.
  int wait();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace imaged::store::testing
