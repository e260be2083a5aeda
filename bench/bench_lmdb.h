// The raw LMDB baselines the benchmarks compare the store with.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bench_util.h"

namespace imaged::bench {

// A raw read-only cursor over the events database; `each` sees every value. Returns events/s.
template <typename Each>
inline double rawScan(const std::string& logDir, uint64_t* count, Each&& each) {
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 8);
  if (mdb_env_open(env, logDir.c_str(), MDB_NOTLS | MDB_RDONLY, 0600) != 0) {
    throw std::runtime_error("raw open of " + logDir);
  }
  MDB_txn* txn;
  MDB_dbi dbi;
  mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  mdb_dbi_open(txn, "events", 0, &dbi);
  MDB_cursor* c;
  mdb_cursor_open(txn, dbi, &c);
  MDB_val k, v;
  uint64_t n = 0;
  Stopwatch sw;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    each(static_cast<const uint8_t*>(v.mv_data), v.mv_size);
    ++n;
  }
  const double rate = n / sw.seconds();
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  *count = n;
  return rate;
}

}  // namespace imaged::bench
