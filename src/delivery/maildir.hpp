// Maildir delivery (the maildir(5) convention from qmail): write into tmp/,
// fsync, link/rename into new/, fsync new/.  The embedded default sink until
// relaying lands.
#pragma once

#include <filesystem>
#include <string>

#include "queue/spool.hpp"
#include "util/result.hpp"

namespace mxgate::delivery {

class Maildir {
 public:
  // Creates dir/{tmp,new,cur} as needed.
  static Result<Maildir> open(const std::filesystem::path& dir);

  // Delivers one copy: Return-Path and Delivered-To headers first, line ends
  // converted from CRLF to LF.  Returns the file name in new/.
  Result<std::string> deliver(const queue::SpooledMessage& message) const;

  const std::filesystem::path& directory() const { return dir_; }

 private:
  explicit Maildir(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
};

}  // namespace mxgate::delivery
