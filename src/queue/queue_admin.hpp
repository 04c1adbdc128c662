// Queue administration: what `mxgate queue list [--json]`, `mxgate queue
// delete ID` and `mxgate queue flush` do.  These run in a separate process,
// on a running or a stopped gateway, and touch only the files:
//
//   spool/queue/<id>   the message (read with Spool::decode; never through
//                      Spool::open, which would remove a running gateway's
//                      half-written files in tmp/)
//   spool/state/<id>   its delivery state (queue/delivery_state.hpp)
//   spool/mxgate.pid   the running gateway's pid, decimal, written by it
//
// Each function returns the text to print (ending in a newline) or an error
// message for stderr.  Everything printed that came from the network
// (addresses, replies) has control characters replaced by '?', so a hostile
// reply cannot drive the administrator's terminal; JSON output is valid
// UTF-8 with every control character escaped.
//
// Races with a running gateway, by design harmless: list may miss a
// message delivered meanwhile or show a state one attempt old; delete of a
// message being delivered right now cannot stop that attempt, and the
// delivery thread may then re-create state/<id>, an orphan that
// prune_states() removes at the next start.
#pragma once

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "queue/delivery_state.hpp"
#include "util/result.hpp"

namespace mxgate::queue {

// spool_dir/mxgate.pid.  The gateway must install its SIGUSR1 handler
// before it writes this file (SIGUSR1's default action ends the process)
// and should remove the file when it stops.
std::filesystem::path pid_file(const std::filesystem::path& spool_dir);

// The signal `queue flush` sends: "try every deferred message now".
inline constexpr int kFlushSignal = SIGUSR1;

// One queued message as list shows it.
struct QueueEntry {
  std::string id;
  std::string error;  // non-empty: the file could not be read or decoded; other fields unset
  std::int64_t arrival_unix = 0;
  std::uint64_t size = 0;   // content bytes
  std::string sender;       // empty for the null sender
  DeliveryState state;      // saved, or fresh (all pending) when never tried
  std::string state_error;  // non-empty: state/<id> is unreadable or corrupt; state is the fresh one
};

// Every message in spool_dir/queue, oldest first.  A message removed while
// reading (delivered meanwhile) is skipped.  Error: no queue directory.
Result<std::vector<QueueEntry>> queue_entries(const std::filesystem::path& spool_dir);

// `mxgate queue list`: a block per message (like postqueue -p) and a
// summary line, or "Mail queue is empty".  With json: an array of objects
// {"id", "arrival", "arrival_unix", "size", "sender", "attempts",
//  "first_attempt_unix", "next_attempt_unix", "last_error",
//  "recipients": [{"address", "status", "last_reply"}]}, or
// {"id", "error"} for an unreadable message ("state_error" is added when
// the state file is bad).
Result<std::string> queue_list(const std::filesystem::path& spool_dir, bool json);

// `mxgate queue delete ID`: removes queue/<id> and state/<id> (unlink, then
// fsync of each directory).  Refuses an id that is not [0-9A-Z]+ (so no
// path can be named) and reports a message that does not exist.  No bounce
// is sent.
Result<void> queue_delete(const std::filesystem::path& spool_dir, std::string_view id);

// `mxgate queue flush`: if the pid file names a live process whose
// /proc/<pid>/comm is "mxgate", sends it kFlushSignal and returns "flush
// requested"; the process is pinned with pidfd_open(2) before its name is
// checked, so a recycled pid is never signalled.  Otherwise sets every saved
// state's next attempt to 0 (now) and returns "not running: queued mail
// will be tried at next start".  Error: the signal could not be sent
// (EPERM: run it as the gateway's user or root), or a state file could not
// be rewritten.
Result<std::string> queue_flush(const std::filesystem::path& spool_dir);

// A JSON string literal (with the quotes) for arbitrary bytes: '"', '\\' and
// controls escaped, invalid UTF-8 replaced by U+FFFD.
std::string json_string(std::string_view bytes);

// Shared with the quarantine's commands (quarantine_admin.hpp):
// For the terminal: well-formed UTF-8 kept, controls (C0, DEL, C1) and
// malformed bytes become '?'.
std::string printable(std::string_view bytes);
// "2025-02-13 10:00:00 UTC"; with iso, "2025-02-13T10:00:00Z".
std::string utc_time(std::int64_t unix_seconds, bool iso = false);
// Queue IDs in dir, sorted (string order is arrival order, see queue_id.cpp).
Result<std::vector<std::string>> list_ids(const std::filesystem::path& dir);
// Sends kFlushSignal to the gateway named by the pid file: true when sent,
// false when no gateway runs, an error when one runs but cannot be signalled.
Result<bool> signal_gateway(const std::filesystem::path& spool_dir);

}  // namespace mxgate::queue
