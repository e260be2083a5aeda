// The one way to include Boost.Asio here: <utility> first, because Boost 1.74's Asio misses it
// under C++20 with GCC 12 (BUILD-NOTES.md); harmless with newer Boost.
#pragma once

#include <utility>

#include <boost/asio.hpp>

namespace asio = boost::asio;
