@0xa1e3d6c8b2f40917;
# The baseline of the RPC benchmarks: a bare Cap'n Proto echo over a Unix socket.
interface Echo {
  echo @0 (data :Data) -> (data :Data);
}
