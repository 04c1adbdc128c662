// Durable spool: one file per accepted message, written under tmp/, fsync'd,
// renamed into queue/ and the directory fsync'd before the SMTP server may
// answer 250 (RFC 5321 section 6.1: once accepted, a message is our
// responsibility).  A file in queue/ is complete by construction; anything
// left in tmp/ after a crash was never acknowledged and is removed at open.
// The SMTP server stores through queue::SpoolWriter (spool_writer.hpp), which
// makes many messages durable with one directory fsync; store() below is the
// one-message form (bounces, tests).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "queue/envelope.hpp"
#include "util/result.hpp"

namespace mxgate::queue {

struct SpooledMessage {
  Envelope envelope;
  std::string content;  // the message as received (CRLF line ends), Received header first
  // Set by Spool::load(..., ContentRead::if_small) when the content is still
  // on disk (content is then empty): load again with ContentRead::whole.
  bool content_pending = false;
};

class Spool {
 public:
  // Creates dir, dir/tmp and dir/queue as needed and removes leftovers in tmp/.
  static Result<Spool> open(const std::filesystem::path& dir);

  // Durably stores a message under envelope.id.  Thread-safe (distinct ids).
  // On any error nothing is left behind and the caller answers 452 4.3.1.
  Result<void> store(const Envelope& envelope, std::string_view content) const;

  // The header of a spool file (everything before the content, see the
  // format in spool.cpp) for envelope.id and content_size bytes of content.
  // Fails for an invalid id, no recipients, an empty recipient or a CR or
  // LF in any field.  Pure.
  static Result<std::string> encode_header(const Envelope& envelope, std::size_t content_size);

  // IDs of the complete messages, oldest first.
  std::vector<std::string> list() const;

  // read() then decode().
  Result<SpooledMessage> load(std::string_view id) const;

  // The same for delivery, with the content read into buffer's storage (a
  // buffer handed back from an earlier message keeps its capacity, and its
  // size: only growth is zero-filled).  On failure, failure tells an I/O
  // problem worth retrying (io) from a file that will never load (corrupt,
  // see quarantine()).
  // With ContentRead::if_small, a content that did not come with the first
  // read of the file (16 KiB with the header) is left on disk and the message
  // marked content_pending: the scheduler reads a large message only once a
  // connection is free to send it, so a queue of waiting messages holds their
  // envelopes in memory, not their contents.
  enum class LoadFailure { none, io, corrupt };
  enum class ContentRead { whole, if_small };
  Result<SpooledMessage> load(std::string_view id, std::string buffer, LoadFailure& failure,
                              ContentRead content = ContentRead::whole) const;

  // The raw bytes of queue/<id>.  An error here is an I/O problem (or the
  // file is gone), worth retrying; it says nothing about the file's contents.
  // The bytes go into buffer (cleared first), reusing its capacity.
  Result<std::string> read(std::string_view id, std::string buffer = {}) const;

  // Parses the bytes of a spool file named id.  Every error means the file
  // is corrupt (bad header, truncated, trailing bytes, wrong id) and will
  // never load; see quarantine().  Pure: no I/O, suitable for fuzzing.
  static Result<SpooledMessage> decode(std::string_view file, std::string_view id);
  // The same, the content taking over file's buffer (the header is moved
  // out of the way in place) instead of a copy of a possibly large message.
  static Result<SpooledMessage> decode(std::string&& file, std::string_view id);

  // Moves a corrupt queue/<id> to corrupt/<id> (created as needed) so it is
  // kept for inspection but never retried.
  Result<void> quarantine(std::string_view id) const;

  // Removes a message once delivered: unlink(2) only, deliberately without
  // an fsync of queue/.  A removal lost in a crash brings the file back and
  // the message is delivered a second time (at-least-once), never lost; the
  // next fsync of queue/ (every intake batch makes one) or the kernel's
  // writeback makes it durable soon enough.
  Result<void> remove(std::string_view id) const;

  const std::filesystem::path& directory() const { return dir_; }

 private:
  explicit Spool(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
};

// A new queue ID: unique per host across restarts, sortable by arrival time,
// characters [0-9A-Z] only.  Thread-safe.
std::string new_queue_id();

}  // namespace mxgate::queue
