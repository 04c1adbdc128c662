// The Bayesian spam classifier: a token store learned from mail the operator
// has sorted (`mxgate learn --spam|--ham FILES`), and a score for each new
// message from the tokens it shares with what was learned.
//
// Method.  The family of SpamAssassin's Bayes plugin and SpamBayes:
//   - each message is a set of tokens (bayes_tokens() below; a token counts
//     once per message however often it occurs);
//   - per token w, with c_s(w)/c_h(w) the spam/ham messages that held it
//     and S/H all learned spam/ham messages, Graham's ratio
//       p(w) = (c_s(w)/S) / (c_s(w)/S + c_h(w)/H)
//     is shrunk towards x for rarely seen tokens, as Gary Robinson proposed
//     ("A Statistical Approach to the Spam Problem", Linux Journal 107, 2003):
//       f(w) = (s·x + n·p(w)) / (s + n),   n = c_s(w) + c_h(w);
//   - the at most kBayesMaxClues tokens with |f(w) - 0.5| >= kBayesMinStrength
//     are combined with Fisher's method (Robinson's "chi-square combining",
//     as SpamBayes' chi2_spamprob): S' = 1 - C⁻¹(-2 Σ ln(1-f), 2N),
//     H' = 1 - C⁻¹(-2 Σ ln f, 2N), probability = (1 + S' - H') / 2, with C⁻¹
//     the chi-square survival function.  Near 1 is spam, near 0 ham, and
//     near 0.5 either too little evidence or strong evidence both ways.
//   Constants: s = 0.030 and x = 0.538 are SpamAssassin's (FW_S_CONSTANT,
//   FW_X_CONSTANT in Bayes.pm), the minimum strength 0.1 and the 150 clues
//   are SpamBayes' (minimum_prob_strength, max_discriminators).  They were
//   chosen among the published sets (SpamBayes' s = 0.45, x = 0.5, 0.1;
//   SpamAssassin's 0.030, 0.538, 0.346; Robinson's s = 1) on validation
//   splits of the training half of the evaluation corpus, never its test
//   half: `bench/filter-eval --validation`, fewest ham above the cut at 90 %
//   and 94 % of spam caught, over four splits (bench/README.md).
//
// Findings.  check_bayes() reports one Category::spam finding, the bucket
// of kBayesBuckets the probability falls in, named like SpamAssassin's rules
// (BAYES_00 ... BAYES_99, BAYES_999), with SpamAssassin's bucket bounds.
// Weights: fitted together with the weighted spam rules (rules/spam.toml)
// by bench/fit-rule-scores, a logistic regression on validation splits of
// the training half of the evaluation corpus (never its test half), kept
// non-decreasing in the probability, and shifted so that the default
// [filter] spam_threshold (5.0) is the cut chosen there.  From 0.6 up a
// bucket reaches the threshold alone (ham signs such as a reply to an
// earlier message can take it back under); BAYES_50 (0.4 to 0.6) needs
// about 1.5 points of rules, BAYES_20/40 more; below 0.05 a message is all
// but cleared.  The chi-square probability is nearly two-valued: on the
// validation splits about as few ham messages scored 0.6 or more as 0.99
// or more, so the middle buckets are where the rules decide.  No finding
// at all until the
// store has learned BayesOptions::min_spam spam and min_ham ham messages
// (200 each by default, SpamAssassin's bayes_min_spam_num /
// bayes_min_ham_num): below that the counts are noise.
//
// Store.  One SQLite database (schema below, PRAGMA user_version =
// kBayesSchemaVersion, application_id 'mxgb'), WAL journal so that a
// learning run never blocks the gateway's reader nor the other way round.
// Tokens are stored as 64-bit SipHash-2-4 values (bayes_token_hash), as
// SpamAssassin stores 40-bit SHA-1 prefixes: fixed-width keys, and no mail
// text on disk.  At 2^64 a collision between two of even 10^7 tokens has a
// probability around 3·10^-6, and changes two counts at worst.
//   tokens(token INTEGER PRIMARY KEY, spam INTEGER, ham INTEGER)
//       messages learned as spam/ham that held the token;
//   messages(id = 1, spam INTEGER, ham INTEGER)   messages learned of each class;
//   learned(key BLOB PRIMARY KEY, spam INTEGER)   every learned message, by
//       bayes_message_key(), and the class it was learned as;
//   meta(name TEXT PRIMARY KEY, value TEXT)       "tokenizer" = kBayesTokenizer.
// The tokenizer's version is stored because counts learned with one
// tokenizer mean nothing to another: a store learned with another version
// is refused (relearn it).
//
// Learning is idempotent per message: a message already learned as the same
// class is skipped, one learned as the other class is moved (its tokens are
// subtracted from the old class and added to the new; the tokenizer is
// deterministic, so the same tokens come out).  One learn_messages() call
// is one transaction: all files or none.
//
// Reading.  open_bayes(path, false) opens the database read-only and loads
// every token into an in-memory open-addressing table (16 bytes a slot, at
// most half full): a lookup is about one cache miss instead of a B-tree
// descent through SQLite's page cache.  Measured with the store learned
// from the evaluation's training half (71,104 tokens from 3,023 messages;
// bench/README.md, "Spam filter evaluation"), one core: tokenizing and
// scoring a message takes 0.08 ms with the snapshot and 1.2 to 1.8 ms with
// SQLite lookups (the whole of `mxgate check` takes 0.3 ms a message);
// loading the snapshot takes 35 to 45 ms and 4 MiB (about 0.5 s and 32 to
// 64 MiB for a million tokens).  The snapshot does not follow later
// learning; changed() says when the database has moved on, and the caller
// opens a new store and swaps it in.  A writable store (learning, tests)
// answers lookups from SQLite.  Scoring a read-only store is thread-safe; a
// writable store serialises its lookups.
//
// The read-only connection of a WAL database still writes its -shm file:
// the directory (the spool by default) must be writable by the gateway's
// user, and learning should run as that user so the files keep its owner.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filter/finding.hpp"
#include "filter/mime_parser.hpp"
#include "filter/parsed_message.hpp"
#include "util/result.hpp"

namespace mxgate::filter {

// ---------------------------------------------------------------- tokenizer
//
// bayes_tokens() turns a parsed message into its distinct tokens, in the
// order first met, lower-cased (ASCII letters only: other scripts are kept
// as written).  Header-derived tokens carry a prefix naming their source:
//   "s:WORD"        words of the decoded Subject (word rules below)
//   "from:ADDRESS"  the From address; "fromdom:DOMAIN" its domain;
//   "fromname:WORD" words of its display name
//   "rtdom:DOMAIN"  each Reply-To domain (at most kBayesMaxReplyTo), and
//   "rt:samedomain" / "rt:otherdomain" against the From domain
//   "h:NAME"        each top-level header field name present, and
//   "h:NAME*K"      how often when more than once ("h:received*4"; "*10+")
//   "h:NAME:WORD"   the words of the raw value (unfolded, not decoded, read
//                   from the message itself) of the fields SpamBayes reads
//                   by default: X-Mailer, User-Agent, Content-Type (type,
//                   charset, boundary), Content-Transfer-Encoding; and
//                   "h:message-id:DOMAIN" (or "h:message-id:none").  The
//                   words of other values (list-manager fields and the
//                   like) are not read: on the validation splits they made
//                   the classifier worse, every message of one source
//                   repeating the same tokens and outvoting the text.
//   "h:to:MAILBOX", "h:to:@DOMAIN" (and "h:cc:...")  each address of To
//                   and Cc, and its domain
//   "r:HOST", "r:ip:A.B.C.D", "r:ip:A.B.C", "r:ip:A.B", "r:for:MAILBOX"
//                   the relays each Received field names: host names with
//                   their parent domains of two labels or more, IPv4
//                   addresses (not 127/8) with their /24 and /16, and the
//                   "for" recipient; dates, ids and versions are dropped.
//                   A sender's servers recur across its messages where its
//                   words do not (cross-validated ROC AUC 0.9974 -> 0.9984
//                   with these and the To tokens, bench/README.md).
//   "ct:TYPE"       each leaf part's content type; "att:EXT" each
//                   attachment's file name extension (at most 10 bytes);
//                   "parts:N" the leaf part count (0, 1, 2, 3, 4-5, 6-10, 11+)
//   "url:HOST"      the host of each URL in the text and HTML bodies
//                   (filter/url.hpp: find_urls, parse_url), and each parent
//                   domain of two labels or more ("url:example.com" for
//                   www.example.com); "url:ip" for an IP literal
//   "html:TAG"      each HTML element name used (a-z0-9, at most 10 bytes)
// and body words carry none: the text/plain bodies and the visible text of
// the HTML bodies (tags, comments, <script> and <style> removed, the common
// entities decoded).
//
// Word rules (after SpamAssassin's tokenize_line): a word is a run of ASCII
// letters and digits, bytes >= 0x80 and  - ' . , @ * ! _ $ %  (every other
// byte separates words);
// leading and trailing  - ' . ,  are trimmed; words shorter than
// kBayesMinWordBytes are dropped; longer than kBayesMaxWordBytes become
// "sk:" + their first kBayesLongWordPrefix bytes (cut at a UTF-8
// boundary), which keeps long random strings (tracking ids, base64 left in
// a body) from flooding the store with one-off tokens.
//
// Limits, each counted separately:
inline constexpr std::size_t kBayesMinWordBytes = 3;
inline constexpr std::size_t kBayesMaxWordBytes = 15;
inline constexpr std::size_t kBayesLongWordPrefix = 7;
// Addresses, domains and hosts in header and URL tokens are cut to this.
inline constexpr std::size_t kBayesMaxValueBytes = 64;
// Of the text body and of the HTML body (before its tags are removed), the
// first this many bytes are read; the rest of a longer body adds nothing.
inline constexpr std::size_t kBayesMaxBodyBytes = 256 * 1024;
// Of the Subject, the first this many bytes.
inline constexpr std::size_t kBayesMaxSubjectBytes = 1024;
// URLs read per body (text and HTML each).
inline constexpr std::size_t kBayesMaxUrls = 200;
// Header field names read (the first ones, in order).
inline constexpr std::size_t kBayesMaxHeaderNames = 200;
// Of the raw header, the first this many bytes; of those, the first this
// many fields; of each read field's unfolded value, the first this many
// bytes.
inline constexpr std::size_t kBayesMaxHeaderBytes = 64 * 1024;
inline constexpr std::size_t kBayesMaxHeaderFields = 100;
inline constexpr std::size_t kBayesMaxFieldBytes = 1024;
inline constexpr std::size_t kBayesMaxReplyTo = 5;
// Leaf parts read for "ct:"/"att:" tokens.
inline constexpr std::size_t kBayesMaxParts = 100;
// Distinct tokens per message: header, part, URL and HTML tokens come
// first, then body words until this many.  Bounds learning's writes and
// scoring's lookups per message.
inline constexpr std::size_t kBayesMaxTokens = 5000;
// Stored with the counts; bumped whenever the rules above change.
inline constexpr std::string_view kBayesTokenizer = "mxgate-2";

// content is the raw message (only its header is read); message is its
// parse (filter::parse_mime).  Learning and scoring both tokenize this way.
std::vector<std::string> bayes_tokens(std::string_view content, const ParsedMessage& message);

// SipHash-2-4 (Aumasson and Bernstein, 2012) of the token, with the fixed
// key 00 01 .. 0f (the paper's test key: the hash is a compact identifier,
// not a secret).  Never 0 (0 is mapped to 1; 0 marks an empty slot in the
// snapshot).
std::uint64_t bayes_token_hash(std::string_view token);

// The identity of a message for idempotent learning: SHA-256 of
//   "mxgate-bayes-key-1\0" + Message-ID field value (trimmed; empty when
//   absent) + "\0" + the body (everything after the first empty line,
//   CRLF normalised to LF).
// The same message learned again, even after different relays added
// different Received fields or stored it with other line endings, has the
// same key; two messages with one (forged or missing) Message-ID but
// different bodies do not.  A body changed in transit (a list footer) makes
// another message.
std::array<unsigned char, 32> bayes_message_key(std::string_view content);

// --------------------------------------------------------------- classifier

inline constexpr double kBayesUnknownStrength = 0.030;     // Robinson's s
inline constexpr double kBayesUnknownProbability = 0.538;  // Robinson's x
inline constexpr double kBayesMinStrength = 0.1;           // |f(w) - 0.5| a clue needs
inline constexpr std::size_t kBayesMaxClues = 150;

struct BayesBucket {
  double from;  // probability >= from (up to the next bucket's from)
  std::string_view rule;
  double score;
};
// In ascending order; the finding is the last bucket whose from <= p.
inline constexpr std::array<BayesBucket, 10> kBayesBuckets{{
    {0.00, "BAYES_00", -3.2},
    {0.01, "BAYES_05", 0.3},
    {0.05, "BAYES_20", 1.7},
    {0.20, "BAYES_40", 1.9},
    {0.40, "BAYES_50", 3.9},
    {0.60, "BAYES_60", 5.6},
    {0.80, "BAYES_80", 5.6},
    {0.95, "BAYES_95", 5.6},
    {0.99, "BAYES_99", 5.6},
    {0.999, "BAYES_999", 8.0},
}};

struct BayesOptions {
  // No finding until the store has learned this many of each class.
  std::uint64_t min_spam = 200;
  std::uint64_t min_ham = 200;
};

class BayesStore;

struct BayesClue {
  std::string token;
  double probability = 0.5;  // f(w)
};

struct BayesResult {
  double probability = 0.5;
  std::size_t tokens = 0;        // distinct tokens in the message
  std::vector<BayesClue> clues;  // the clues combined, strongest first
};

// The classifier's probability for a message, whatever the store's counts.
BayesResult bayes_classify(std::string_view content, const ParsedMessage& message, const BayesStore& store);

// The bucket finding ("p=0.9973, 150 clues of 412 tokens; spam: ...; ham:
// ..."), or nothing while the store holds fewer messages than options asks
// for.  content and message as for bayes_tokens().
Findings check_bayes(std::string_view content, const ParsedMessage& message, const BayesStore& store,
                     const BayesOptions& options = {});

// -------------------------------------------------------------------- store

inline constexpr int kBayesSchemaVersion = 1;
inline constexpr std::int32_t kBayesApplicationId = 0x6d786762;  // "mxgb"

struct BayesCounts {
  std::uint32_t spam = 0;
  std::uint32_t ham = 0;
};

class BayesStore {
 public:
  struct Impl;
  explicit BayesStore(std::unique_ptr<Impl> impl);
  ~BayesStore();
  BayesStore(const BayesStore&) = delete;
  BayesStore& operator=(const BayesStore&) = delete;

  const std::filesystem::path& path() const;
  bool writable() const;
  // Messages learned of each class (as of opening, or the last learning
  // through this store).
  std::uint64_t spam_messages() const;
  std::uint64_t ham_messages() const;
  // Distinct tokens held (the snapshot's, or SQLite's count).
  std::uint64_t token_count() const;
  // Counts of one token hash; zeros when unknown.
  BayesCounts counts(std::uint64_t token_hash) const;
  // True when another connection has committed to the database since this
  // store was opened (SQLite's data_version): time to open a new snapshot.
  bool changed() const;

  Impl& impl() { return *impl_; }
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Opens the database at path.  Writable: created (with its directory's
// existing permissions) when absent, schema created or checked, WAL
// journal.  Read-only: it must exist and hold a store of this schema and
// tokenizer; the whole token table is loaded into memory.  Errors name the
// path: "bayes database /x: does not exist (learn with mxgate learn)",
// "... not an mxgate Bayes store", "... file is not a database", ...
Result<std::unique_ptr<BayesStore>> open_bayes(const std::filesystem::path& path, bool writable);

struct BayesLearnSummary {
  std::size_t learned = 0;                    // newly learned or moved from the other class
  std::size_t skipped = 0;                    // already learned as this class
  std::size_t spam_total = 0, ham_total = 0;  // the store's totals afterwards
};

// Learns each file as one message of the class (spam or ham), parsed with
// limits as the gateway parses.  All or nothing: an unreadable file, a
// read-only store or a database error returns the error and changes nothing.
Result<BayesLearnSummary> learn_messages(BayesStore& store, bool spam,
                                         const std::vector<std::filesystem::path>& files,
                                         const MimeLimits& limits);
// The same for messages already in memory.
Result<BayesLearnSummary> learn_contents(BayesStore& store, bool spam,
                                         const std::vector<std::string_view>& contents,
                                         const MimeLimits& limits);

}  // namespace mxgate::filter
