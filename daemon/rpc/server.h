// The RPC edge: schema/api.capnp served over the Unix socket. Translates between Cap'n Proto
// and the Service; authenticates each connection by its peer credentials.
#pragma once

#include <sys/types.h>

#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <capnp/rpc-twoparty.h>
#include <kj/async.h>
#include <spdlog/spdlog.h>

#include "daemon/asio.h"
#include "daemon/service.h"
#include "schema/api.capnp.h"

namespace imaged::rpc {

// Who may call: the daemon's own uid acts as `ownTenant` (and may read the whole log); other
// uids act as the tenant the config maps them to; any other uid is refused.
struct Access {
  uid_t ownUid = 0;
  std::string ownTenant = "local";
  std::map<uid_t, std::string> tenants;
};

// Limits on what a peer may send.
inline constexpr uint64_t kTraversalLimitWords = 8 << 20;  // 64 MiB per message
inline constexpr int kNestingLimit = 64;

class Listener {
 public:
  // `service` and `logger` must outlive the listener. Runs on the loop thread.
  Listener(asio::io_context& io, Service& service, Access access,
           std::shared_ptr<spdlog::logger> logger);
  ~Listener();

  // Listens on `path` (mode 0600, or 0660 with `group` set to a group id). Refuses when a live
  // daemon already answers there; replaces a stale socket file.
  Status listen(const std::string& path, std::optional<gid_t> group);

  // Stops accepting; open connections stay until closed.
  void stopAccepting();
  // Closes every connection.
  void closeAll();
  size_t connections() const { return connections_.size(); }

 private:
  struct Connection;
  void accept();
  void onAccepted(asio::local::stream_protocol::socket socket);

  asio::io_context& io_;
  Service& service_;
  Access access_;
  std::shared_ptr<spdlog::logger> logger_;
  std::optional<asio::local::stream_protocol::acceptor> acceptor_;
  std::string path_;
  std::list<std::unique_ptr<Connection>> connections_;
  uint64_t nextId_ = 1;
};

}  // namespace imaged::rpc
