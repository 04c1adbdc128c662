// Per-message delivery state: which recipients are still pending, which were
// delivered or failed and with what reply, how many attempts were made and
// when the next one is due.  It lives in a sidecar file spool/state/<id>
// beside the immutable message file spool/queue/<id>, so the message is
// never rewritten; only this small file is replaced after each attempt.
//
// File format, version 1 (LF line ends; one field per line, in this order):
//
//   MXGATE-STATE 1
//   id <queue id>                       must equal the file name
//   attempts <n>
//   first-attempt <unix seconds>        0 = never tried
//   next-attempt <unix seconds>         0 = now
//   last-error <text>                   may be empty after the space
//   recipient <pending|delivered|failed> <address>   once per envelope recipient, in order
//   reply <text>                        the last reply for the recipient above
//   end
//
// Text values (last-error, reply) may hold any byte but CR and LF;
// save_state() replaces each CR or LF in them with a space (multi-line SMTP
// replies become one line).  An address with CR or LF is refused (the spool
// cannot hold one either).  Unknown or missing lines, a wrong order, a
// repeat or anything after "end" make the file corrupt: a change of format
// is a change of version.
//
// Durability: save_state() writes state/.tmp-<id>-<pid>-<n>, fsyncs it,
// rename(2)s it over state/<id> and fsyncs state/ - the sequence of
// write_durably() in util/unique_fd.hpp, except that the rename replaces
// the previous state atomically (write_durably refuses to replace).  After a
// crash the file holds either the old or the new state, never a mix.
//
// Concurrency: one writer per id at a time (the delivery thread; the
// `queue flush` command writes only when no gateway runs).  Readers may run
// at any time; they see a complete old or new file.
//
// Order of operations the scheduler keeps (at-least-once, never lost):
//   - after an attempt: save_state() with the replies, attempts and next time;
//   - when no recipient is pending: queue the bounce for the failed ones (if
//     any, see delivery/bounce.hpp), then Spool::remove(id), then
//     remove_state(id).  A crash between the last two leaves an orphan state
//     file, which prune_states() removes at the next start.
//
// Removal is not durable: Spool::remove() and remove_state() unlink without
// fsyncing the directory (one disk flush per delivered message saved).  A
// crash may undo either or both unlinks, and every combination is safe: the
// message file back with no state file is delivered again to every
// recipient; back with its last saved state, again to the recipients that
// state still shows pending; a state file back without its message is an
// orphan for prune_states().  At-least-once, never a loss.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "queue/envelope.hpp"
#include "util/result.hpp"

namespace mxgate::queue {

struct RecipientState {
  std::string recipient;
  enum class Status { pending, delivered, failed } status = Status::pending;
  // "550 5.1.1 No such user", or a local reason "4.4.1 connection refused by mx.example:25"
  std::string last_reply;
};

struct DeliveryState {
  std::string id;
  std::vector<RecipientState> recipients;  // the envelope's recipients, in RCPT order
  unsigned attempts = 0;
  std::int64_t first_attempt_unix = 0;  // 0 = never tried
  std::int64_t next_attempt_unix = 0;   // 0 = now
  std::string last_error;
};

// Queue IDs as the spool accepts them: 1 to 64 of [0-9A-Z].  Checked before
// an id becomes part of a path, so "../x" never does.  (Same rule as the
// private valid_id() in spool.cpp.)
bool valid_queue_id(std::string_view id);

// "pending", "delivered", "failed".
std::string_view status_name(RecipientState::Status status);

// True when no recipient is pending: the message is finished (bounce the
// failed ones, then remove message and state).
bool finished(const DeliveryState& state);

// spool_dir/state and spool_dir/state/<id> (id is not checked here).
std::filesystem::path state_directory(const std::filesystem::path& spool_dir);
std::filesystem::path state_path(const std::filesystem::path& spool_dir, std::string_view id);

// A state for a message never tried: every envelope recipient pending.
DeliveryState fresh_state(const Envelope& envelope);

// The file format.  encode_state() fails only for an invalid id or an
// address holding CR or LF.  decode_state() is pure (suitable for fuzzing);
// every error means the file is corrupt.
Result<std::string> encode_state(const DeliveryState& state);
Result<DeliveryState> decode_state(std::string_view file, std::string_view id);

// The saved state of id, or nullopt when there is no file yet.  An error is
// an I/O problem or a corrupt file (the message says which).
Result<std::optional<DeliveryState>> read_state(const std::filesystem::path& spool_dir, std::string_view id);

// The saved state of envelope.id, or fresh_state(envelope) when none was
// saved.  A saved state whose recipients are not exactly the envelope's (same
// addresses, same order) is reported as corrupt.  What to do with a corrupt
// state is the caller's choice; the safe one is remove_state() and start
// fresh, which may deliver a second copy to recipients already served but
// loses nothing.
Result<DeliveryState> load_state(const std::filesystem::path& spool_dir, const Envelope& envelope);

// Durably replaces state/<state.id> (see above); creates state/ (0700) on demand.
Result<void> save_state(const std::filesystem::path& spool_dir, const DeliveryState& state);

// Removes state/<id> (unlink only, not durable: see above).  No file is not an error.
Result<void> remove_state(const std::filesystem::path& spool_dir, std::string_view id);

// Start-up cleanup, after Spool::open and before delivery starts: removes
// state files whose message is no longer in queue/ and temporary files left
// by a crash during save_state().  Returns how many files it removed.
Result<std::size_t> prune_states(const std::filesystem::path& spool_dir);

}  // namespace mxgate::queue
