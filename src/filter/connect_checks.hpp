// The checks that need nothing but the client, run at the connect stage:
// started when a client connects, they go on while the SMTP dialogue does
// (RFC 5321 section 3.1: the greeting, EHLO and the envelope take several
// round trips), and each message's verdict at the end of DATA/BDAT reads
// their findings, waiting only for what is still running (within the
// verdict's time budget).  One lookup serves every message of the
// connection.  Today: the client address against the DNSBL zones
// (reputation.hpp).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include "filter/finding.hpp"

namespace mxgate::filter {

class ConnectChecks {
 public:
  explicit ConnectChecks(const asio::any_io_executor& executor);

  // What the checks found; waits until they are done.  Cancellable (the
  // verdict's time budget cancels it).
  asio::awaitable<Findings> findings();

  // The checks' result; wakes whoever waits.  Once.
  void complete(Findings findings);
  bool done() const { return done_; }

 private:
  bool done_ = false;
  Findings findings_;
  asio::steady_timer ready_;  // never expires: cancelled by complete()
};

}  // namespace mxgate::filter
