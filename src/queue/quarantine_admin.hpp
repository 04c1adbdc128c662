// The quarantine: messages the content filter held (action "quarantine").
// They are stored exactly like queued mail, durably and in the same file
// format, in a second spool beside the queue:
//
//   spool/quarantine/queue/<id>   the message; its X-mxgate-Verdict header
//                                 field says why it is held
//   spool/quarantine/tmp/         half-written files (removed at start)
//
// What `mxgate quarantine list|show|release|delete` do, on a running or a
// stopped gateway; like queue_admin.hpp, each returns the text to print or an
// error, with everything that came from the network made safe for a
// terminal (text) or escaped (JSON).
//
// release moves the file into spool/queue/ (rename, then fsync of both
// directories: the message is in exactly one place at every instant) and
// asks a running gateway to flush, so it is delivered as if it had been
// accepted; a stopped gateway delivers it at its next start.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

namespace mxgate::queue {

// spool_dir/quarantine: open it with Spool::open to store into it.
std::filesystem::path quarantine_directory(const std::filesystem::path& spool_dir);

struct QuarantineEntry {
  std::string id;
  std::string error;  // non-empty: the file could not be read or decoded; other fields unset
  std::int64_t arrival_unix = 0;
  std::uint64_t size = 0;
  std::string sender;
  std::vector<std::string> recipients;
  std::string client_address;
  std::string verdict;  // the X-mxgate-Verdict field's value, unfolded; empty when absent
};

Result<std::vector<QuarantineEntry>> quarantine_entries(const std::filesystem::path& spool_dir);

// A block per message and a summary line, or "Quarantine is empty"; with
// json an array of {"id", "arrival", "arrival_unix", "size", "sender",
// "recipients", "client_address", "verdict"} (or {"id", "error"}).
Result<std::string> quarantine_list(const std::filesystem::path& spool_dir, bool json);

// One message: its envelope and verdict, then the message itself.  As text,
// the content is shown with control characters other than tab replaced
// (CRLF line ends become newlines); with json, one object with the list's
// fields plus "content".
Result<std::string> quarantine_show(const std::filesystem::path& spool_dir, std::string_view id, bool json);

// Returns "released ID: flush requested" or "released ID: not running: ...".
Result<std::string> quarantine_release(const std::filesystem::path& spool_dir, std::string_view id);

Result<void> quarantine_delete(const std::filesystem::path& spool_dir, std::string_view id);

// The value of header field name in content's header block (unfolded, case-
// insensitive name match), or empty.  Pure.
std::string header_value(std::string_view content, std::string_view name);

}  // namespace mxgate::queue
