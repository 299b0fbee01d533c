// timeline_reader.h: reads back the EVMPI_TIMELINE trace that this test
// process's groups write, for the tests that check which thread ran a
// collective or saw a send or receive complete. A process has one file:
// the first group created with a path opens it, so every group of a test
// program gives the same path, and each test reads what was written after
// it began.
#ifndef EVMPI_TEST_TIMELINE_READER_H
#define EVMPI_TEST_TIMELINE_READER_H

#include "harness.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

class TimelineReader {
public:
  // The path given to evmpi_pg_options_set_timeline is /tmp/evmpi-NAME-PID.
  explicit TimelineReader(const char *name)
      : base_(std::string("/tmp/evmpi-") + name + "-" + std::to_string(getpid())) {}

  const char *base() const { return base_.c_str(); }

  // The file evmpi writes (base.RANK.json); named the first time it is
  // asked for, which must be while MPI runs.
  const std::string &file() {
    if (path_.empty())
      path_ = base_ + "." + std::to_string(evmpi_test_world_rank()) + ".json";
    return path_;
  }

  size_t size() {
    std::ifstream in(file(), std::ios::ate);
    return in ? (size_t)in.tellg() : 0;
  }

  // The "thread" of each event of category cat ("collective" or "p2p"),
  // by sequence number, among those written since the file had skip bytes.
  std::map<unsigned long long, std::string> threads_since(size_t skip, const char *cat) {
    std::ifstream in(file());
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    std::string key = std::string("\"cat\":\"") + cat + "\"";
    std::map<unsigned long long, std::string> out;
    size_t pos = skip < text.size() ? skip : text.size();
    while ((pos = text.find(key, pos)) != std::string::npos) {
      size_t seq_at = text.find("\"seq\":", pos);
      size_t thr_at = text.find("\"thread\":\"", pos);
      size_t end = text.find('}', text.find("\"args\"", pos));
      if (seq_at == std::string::npos || thr_at == std::string::npos || thr_at > end)
        break;
      unsigned long long seq = std::stoull(text.substr(seq_at + 6));
      size_t t0 = thr_at + 10;
      out[seq] = text.substr(t0, text.find('"', t0) - t0);
      pos = end;
    }
    return out;
  }

  // Removes the file (after MPI_Finalize: evmpi writes its end then).
  void remove() {
    if (!path_.empty())
      std::remove(path_.c_str());
  }

private:
  std::string base_, path_;
};

#endif
