// mxgate configuration: the TOML file (docs/configuration.md) parsed once at
// start into plain values.  Every key has a documented default; a bad file is
// refused whole with one line naming the offending key, so the process never
// runs half-configured.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

namespace mxgate::config {

// RFC 3207 STARTTLS policy of one listener; implicit is RFC 8314 TLS from the first byte.
enum class TlsMode { none, may, encrypt, implicit };

std::string_view to_string(TlsMode mode);

struct Listener {
  std::string address;  // as written: "127.0.0.1:2525" or "[::1]:2525"
  std::string host;     // "127.0.0.1" or "::1" (brackets removed)
  std::uint16_t port = 0;
  TlsMode tls = TlsMode::may;
  // Milters (Sendmail milter protocol 6) every message on this listener
  // passes, in order, after mxgate's own checks: "unix:/path",
  // "inet:port@host", "tcp:host:port".
  std::vector<std::string> milters;
};

struct CertificatePair {
  std::filesystem::path cert;  // PEM chain, leaf first
  std::filesystem::path key;   // PEM private key
};

struct Tls {
  std::vector<CertificatePair> certificates;
  std::string min_version = "TLSv1.2";  // "TLSv1.2" or "TLSv1.3"
  // OpenSSL cipher string for TLS <= 1.2; AEAD with ECDHE first, strongest first.
  std::string ciphers =
      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
      "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:"
      "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
      "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
      "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA";
  // TLS 1.3 suites, strongest first.
  std::string ciphersuites =
      "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
  std::string groups = "X25519:P-256:P-384";
};

struct Limits {
  std::uint64_t max_message_size = 36700160;  // bytes of content; SIZE (RFC 1870); 552 5.3.4
  std::size_t max_recipients = 1000;          // per transaction; 452 4.5.3
  std::size_t max_command_line = 2048;        // octets incl. CRLF; 500 5.5.2
  unsigned max_errors = 10;                   // protocol errors per session; then 421 4.7.0
  std::size_t max_connections = 1000;         // concurrent sessions; then 421 4.7.0 at connect
  // Per client IP outside relay_networks (Postfix's anvil); 0 = no limit.
  std::size_t max_connections_per_client = 50;      // concurrent; then 421 4.7.0 at connect
  std::size_t max_connection_rate_per_client = 0;   // sessions per minute; then 421 4.7.0
  std::size_t max_message_rate_per_client = 0;      // MAIL commands per minute; then 450 4.7.1
};

// RFC 5321 section 4.5.3.2 (server side) and our own bounds, in seconds.
struct Timeouts {
  std::chrono::seconds command{300};        // awaiting the next command (4.5.3.2.7)
  std::chrono::seconds data{300};           // awaiting more DATA/BDAT content
  std::chrono::seconds tls_handshake{60};   // STARTTLS / implicit TLS handshake
  std::chrono::seconds shutdown{30};        // grace for sessions in flight on SIGTERM
};

struct Delivery {
  // Where mail goes when no [[route]] matches its recipient domain; empty:
  // such mail is delivered to the domain's MX hosts.
  std::filesystem::path maildir;
  std::uint16_t mx_port = 25;        // port for MX delivery; TLSA names follow it
  std::string tls = "dane";          // default TLS level for MX delivery
  std::size_t max_parallel = 100;    // messages in delivery at once
  std::size_t destination_concurrency = 20;  // connections to one destination at once
};

// Where mail for one recipient domain goes (RFC 5321 section 5.1).
struct Route {
  std::string domain;  // lower case; "*" matches every domain
  enum class Kind {
    mx,       // MX lookup of the recipient domain
    smtp,     // next_hop = "smtp:[host]:port" (no MX lookup) or "smtp:host:port" (MX lookup of host)
    maildir,  // next_hop = "maildir": the local Maildir
  } kind = Kind::mx;
  std::string next_hop;  // as written
  std::string host;      // for smtp: a host name or IP literal (brackets removed)
  bool mx_lookup = true; // smtp:host:port looks up host's MX; smtp:[host] does not
  std::uint16_t port = 25;
  std::string tls;       // none | may | encrypt | dane | dane-only | verify; empty: delivery.tls
};

// [queue]: retry schedule (Postfix's minimal_backoff_time, maximal_backoff_time,
// maximal_queue_lifetime) and the spool writer's parallelism.
struct Queue {
  std::chrono::seconds retry_initial{300};
  std::chrono::seconds retry_max{3600};
  std::chrono::seconds max_lifetime{432000};
  // Threads that write and fdatasync the files of one intake batch in
  // parallel (queue::SpoolWriter), 1 to 64.
  std::size_t sync_threads = 8;
};

struct StubZone {
  std::string name;                    // "dane.test"
  std::vector<std::string> addresses;  // "127.0.0.1@5300"
};

// [dns]: the validating resolver (libunbound).
struct Dns {
  std::vector<std::filesystem::path> trust_anchor_files{"/usr/share/dns/root.key"};
  std::vector<std::string> trust_anchors;  // DS or DNSKEY RRs as text
  std::vector<StubZone> stub_zones;
};

// What happens to a message whose filter verdict falls in a category
// ([filter.actions]) or whose scan failed ([filter] on_failure).  Listed
// from the mildest; when several categories trigger, the most severe wins
// (quarantine outranks tempfail: a held message is safe and final).
enum class FilterAction { accept, tag, tempfail, quarantine, reject };

std::string_view to_string(FilterAction action);

// [filter]: real-time content filtering at the end of DATA/BDAT (src/filter/).
struct Filter {
  bool enabled = true;
  // Our own domains, for look-alike and impersonation checks (lower case).
  // Absent from the file: the accept_domains.
  std::vector<std::string> protected_domains;
  // People whose display name must not arrive from an outside address.
  std::vector<std::string> protected_names;
  // "unix:/path" or "tcp:host:port"; empty: no antivirus (logged at start).
  std::string clamd;
  // Bytes sent to clamd per object; clamd's StreamMaxLength must be at least this.
  std::uint64_t clamd_max_stream = 25u << 20;
  double spam_threshold = 5.0;
  // Summed score at which the other categories trigger (their rules score
  // 1.0 for a definite sign, less for a weak one).
  double phishing_threshold = 1.0;
  double malware_threshold = 1.0;
  double impersonation_threshold = 1.0;
  struct Actions {
    FilterAction spam = FilterAction::quarantine;
    FilterAction phishing = FilterAction::reject;
    FilterAction malware = FilterAction::reject;
    FilterAction impersonation = FilterAction::quarantine;
  } actions;
  // Put in front of the Subject of mail whose action is tag ("[SPAM]");
  // empty: the subject is left alone.
  std::string subject_tag;
  // A check that failed or ran out of time (clamd gone, a scan limit hit).
  FilterAction on_failure = FilterAction::tempfail;
  // The whole verdict, well under the client's 10-minute end-of-data
  // timeout (RFC 5321 section 4.5.3.2.6).
  std::chrono::seconds time_budget{60};
  // MIME and archive limits; a message past one is held as unscannable.
  unsigned max_mime_depth = 20;
  std::size_t max_mime_parts = 500;
  std::uint64_t max_decoded_size = 64u << 20;  // decoded bytes of all parts together
  unsigned max_archive_depth = 3;
  std::size_t max_archive_entries = 1000;
  std::uint64_t max_archive_expanded = 64u << 20;
  // The Bayesian classifier's token store (SQLite), trained with `mxgate
  // learn`; empty in the file is not allowed, absent: <spool>/bayes.sqlite.
  std::filesystem::path bayes_db;
  // The classifier stays silent until it has learned this many of each.
  std::size_t bayes_min_spam = 200;
  std::size_t bayes_min_ham = 200;
  // DNS blocklists (RFC 5782) for the client address and for URL domains;
  // a listing adds its score to spam: by default past spam_threshold with
  // room for the small negative scores (DKIM_VALID), so a listing alone is spam.
  std::vector<std::string> dnsbl;
  std::vector<std::string> uribl;
  double dnsbl_score = 6.0;
  double uribl_score = 6.0;
  // Refusals at RCPT, before the message is sent (Postfix's
  // reject_rbl_client; a policy server's SPF reject): every recipient of a
  // client listed on a dnsbl zone gets 550 5.7.1, every recipient of a
  // transaction whose MAIL FROM fails SPF 550 5.7.23 (RFC 7372).  Off by
  // default: the listing and the SPF fail are then scores in the verdict,
  // which other evidence (a valid DKIM signature aligned with DMARC, RFC
  // 7489 section 10.1) can outweigh.
  bool reject_dnsbl_clients = false;
  bool reject_spf_fail = false;
  // Also at RCPT: 550 5.7.1 for a client whose EHLO/HELO name is no
  // fully-qualified domain name or address literal, an address literal not
  // its own, or our hostname (filter/helo_check.hpp).  Off by default:
  // misconfigured but legitimate servers exist.
  bool reject_invalid_helo = false;
  // The weighted spam rules: a TOML rules file replacing the built-in set
  // (rules/spam.toml); empty: the built-in set.
  std::filesystem::path rules;
  // Per-rule scores replacing the file's ([filter.rule_scores]); 0 turns a rule off.
  std::map<std::string, double> rule_scores;
};

struct Config {
  std::filesystem::path source;  // the file this came from (empty when parsed from text)
  std::string hostname;          // greeting, EHLO reply, Received header
  std::filesystem::path spool;   // durable queue directory
  std::string user;              // drop privileges to this user after binding (when root)
  std::vector<Listener> listeners;
  Tls tls;
  Limits limits;
  Timeouts timeouts;
  Delivery delivery;
  std::vector<Route> routes;                // [[route]], first match wins
  std::vector<std::string> accept_domains;  // domains we receive mail for (lower case)
  // Clients that may relay to any domain (CIDR); default: loopback only.
  std::vector<std::string> relay_networks{"127.0.0.0/8", "::1/128"};
  Queue queue;
  Dns dns;
  Filter filter;
};

// The first route matching domain (case-insensitive), or null.
const Route* find_route(const Config& config, std::string_view domain);
// True for the outbound TLS level names.
bool is_tls_level(std::string_view text);

// Parses TOML text.  Relative paths in it are resolved against base_dir.
// Errors read "KEY: what is wrong", e.g. "listener[0].tls: expected one of none, may, encrypt, implicit".
Result<Config> parse(std::string_view toml_text, const std::filesystem::path& base_dir);

// Reads and parses a file; relative paths are resolved against the file's directory.
Result<Config> load_file(const std::filesystem::path& file);

}  // namespace mxgate::config
