// Which attachments carry malware: executables, scripts and launchers,
// Office macros, names that disguise one of these as a document, and
// archives that hide them or that we cannot see into.  Most mail-borne
// ransomware arrives as one of these carriers; a signature scanner (clamd)
// only knows yesterday's payloads, a carrier rule also stops tomorrow's.
//
// The policy reads content, never the sender's Content-Type: a PE called
// "report.pdf" is an executable.  It checks every part with
// Part::attachment set, and any other part whose bytes are not text
// (filter/file_type.hpp's sniff() says something other than unknown, HTML
// or PDF); text bodies are not checked.  Archives (zip, 7z, RAR, tar, gzip,
// ISO 9660) are listed with libarchive from memory and every entry goes
// through the same rules, reported with its path: "invoice.zip > setup.exe".
//
// Every finding is Category::malware with score 1.0, and each rule is
// reported at most once per part ("... (and 3 more)" counts the rest):
//   EXECUTABLE_ATTACHMENT  PE, ELF, Mach-O or Java class content.
//   SCRIPT_ATTACHMENT      a name Windows runs, installs or mounts on a
//                          double click (.js .vbs .hta .ps1 .bat .lnk .iso
//                          .one ..., list in attachment_policy.cpp), or
//                          shortcut (MS-SHLLINK) or disc image content.
//   OFFICE_MACRO           a compound file (MS-CFB) holding a VBA project
//                          (MS-OVBA); an OOXML package with a vbaProject.bin
//                          part or a macro-enabled content type in
//                          [Content_Types].xml (ECMA-376 Part 2 and the
//                          MS-OFFMACRO extensions); an ODF package with Basic
//                          modules or Scripts/.
//   DOUBLE_EXTENSION       a document-looking extension, padding, then a
//                          script or executable one ("invoice.pdf.exe",
//                          "scan.doc   .js", "a.pdf____.scr"), or a bidi
//                          override (U+202E ...) in a name that ends in one.
//   ENCRYPTED_ARCHIVE      an entry with the zip encryption flag (PKWARE
//                          APPNOTE 4.4.4 bit 0, also AES) or 7z/RAR
//                          encryption as libarchive reports it, or a listing
//                          that fails for want of a passphrase: the password
//                          is in the mail body and no scanner sees inside.
//   ARCHIVE_LIMIT          a limit below stopped the inspection; an archive
//                          we cannot see into is treated as a carrier.
//   ARCHIVE_UNREADABLE     libarchive rejects data whose magic number AND
//                          name both say archive (".zip", ".rar", ".7z",
//                          ".tar", ".gz", ".tgz", ".iso", ".img", ...): the
//                          recipient's more forgiving unpacker may open what
//                          we could not.  Not reported when the part was cut
//                          at the MIME decoded-size limit (already reported
//                          through ParsedMessage::limit_exceeded), nor for a
//                          gzip or tar stream that breaks after some content
//                          was inspected: a truncated stream hides only the
//                          rest of itself, and every truncated .gz would
//                          otherwise count as malware.
#pragma once

#include <cstddef>
#include <cstdint>

#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"

namespace mxgate::filter {

struct AttachmentLimits {
  // How deep archives inside archives are listed: 1 lists an attached
  // archive but not the archives inside it, 0 lists none.  An archive deeper
  // than this is reported, not opened (3: a.zip > b.zip > c.zip is listed, a
  // fourth level is ARCHIVE_LIMIT).
  unsigned max_archive_depth = 3;
  // Entries listed per message, all archives and levels together (a .docx is
  // an archive of some 15 entries).  Entry 1001 is ARCHIVE_LIMIT and ends all
  // archive inspection for the message.
  std::size_t max_archive_entries = 1000;
  // Bytes libarchive decompresses for us per message, every entry at every
  // level counted (nested archives are counted once as an entry and again
  // through their own entries).  Bounds memory and CPU against zip bombs;
  // entry data is read in full so the count is exact.  One byte past it is
  // ARCHIVE_LIMIT and ends all archive inspection for the message.
  std::uint64_t max_expanded_bytes = 64ull << 20;
};

Findings check_attachments(const ParsedMessage& message, const AttachmentLimits& limits);

}  // namespace mxgate::filter
