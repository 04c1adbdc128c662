// SpoolWriter: group commit for the spool.  Every message the SMTP server
// accepts is stored through it before the client is answered 250.
//
// One writer thread takes every request pending at that moment as one batch
// and commits it:
//
//   1. for each message, in parallel on up to sync_threads threads: create
//      tmp/<id> (O_EXCL, 0600), write the header and the content, fdatasync,
//      close;
//   2. rename each file that got this far into queue/<id> (RENAME_NOREPLACE);
//   3. fsync queue/ once for the whole batch;
//   4. complete every request with its own result.
//
// While a batch commits, new requests accumulate into the next one: there is
// no timer and no added wait, so at low load a batch is one message and
// costs what Spool::store() costs, and under load the directory fsync (and,
// on a journalling file system, the journal commit that the first file's
// fdatasync forces) is shared by every message of the batch.  The parallel
// fdatasyncs let the block layer merge their cache flushes.
//
// Results.  A message whose create, write, fdatasync, close or rename fails
// fails alone: its tmp/ file is unlinked, nothing of it is in queue/, and the
// server answers 452 4.3.1.  A failed fsync of queue/ fails the whole batch:
// the renames in it are not known to be durable, so every file of the batch
// is unlinked from queue/ again before any request completes, and none of
// them was announced to the delivery scheduler (the server only announces
// what succeeded).  The fsync is not retried: after a failed fsync Linux
// may report the next one clean without having written anything.  If the
// unlink back out of queue/ fails too, or a crash comes before it is
// durable, the file may be delivered after a restart although the client
// was answered 452 and will send the message again: a duplicate, never a
// loss.  (The same holds when `mxgate queue flush` lists queue/ between
// step 2 and step 3.)
//
// fdatasync rather than fsync: the file is new, so the data, its size and
// its block map - everything fdatasync makes durable - are all of it; its
// timestamps are not needed to read it back.
//
// The writer has no Asio dependency: submit() takes a callback, which runs
// on the writer thread; server::Server wraps it into an awaitable that
// resumes the session on its own executor.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "queue/envelope.hpp"
#include "queue/spool.hpp"
#include "util/result.hpp"

namespace mxgate::queue {

// The system calls a batch makes, each returning 0 or an errno value.  The
// default implementation is the real thing; a test derives from it to make
// one call fail for one file.  Called from several threads at once.
class SpoolDisk {
 public:
  virtual ~SpoolDisk() = default;
  // openat(dir_fd, name, O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600); the new descriptor in fd.
  virtual int create(int dir_fd, const std::string& name, int& fd);
  // Writes all of data (after partial writes and EINTR).
  virtual int write(int fd, std::string_view data);
  virtual int sync(int fd);  // fdatasync(2)
  virtual int close(int fd);
  // renameat2(from_dir, name, to_dir, name, RENAME_NOREPLACE), plain
  // renameat where the file system lacks the flag.
  virtual int rename(int from_dir, int to_dir, const std::string& name);
  virtual int sync_directory(int dir_fd);  // fsync(2) of a directory
  virtual int unlink(int dir_fd, const std::string& name);
};

class SpoolWriter {
 public:
  // Called once with the result of one store; runs on the writer thread, so
  // it should only hand the result over (post it to an event loop).
  class Done {
   public:
    Done() = default;
    template <class F>
    Done(F f) : impl_(std::make_unique<Impl<F>>(std::move(f))) {}
    explicit operator bool() const { return impl_ != nullptr; }
    void operator()(Result<void> result) {
      auto impl = std::move(impl_);
      impl->call(std::move(result));
    }

   private:
    struct Base {
      virtual ~Base() = default;
      virtual void call(Result<void> result) = 0;
    };
    template <class F>
    struct Impl final : Base {
      explicit Impl(F f) : f(std::move(f)) {}
      void call(Result<void> result) override { f(std::move(result)); }
      F f;
    };
    std::unique_ptr<Base> impl_;  // move-only, unlike std::function: an Asio handler is move-only
  };

  struct Stats {
    std::uint64_t batches = 0;
    std::uint64_t messages = 0;
    std::size_t largest_batch = 0;
  };

  // Opens spool's tmp/ and queue/ (Spool::open made them) and starts the
  // writer thread plus sync_threads - 1 helpers for step 1 (sync_threads is
  // at least 1).  disk: null for the real system calls.
  static Result<std::unique_ptr<SpoolWriter>> start(const Spool& spool, std::size_t sync_threads,
                                                    std::unique_ptr<SpoolDisk> disk = nullptr);
  // Completes every request already submitted (committing them), then stops.
  ~SpoolWriter();
  SpoolWriter(const SpoolWriter&) = delete;
  SpoolWriter& operator=(const SpoolWriter&) = delete;

  // Thread-safe.  Stores content under envelope.id in the next batch and
  // calls done exactly once with the result.  envelope and content must stay
  // valid and unchanged until then (the session is suspended meanwhile).
  void submit(const Envelope& envelope, std::string_view content, Done done);

  // Thread-safe; for tests and the log.
  Stats stats() const;

 private:
  struct Request {
    const Envelope* envelope = nullptr;
    std::string_view content;
    Done done;
    std::string header;
    Result<void> result;
    bool in_queue = false;  // renamed into queue/ in this batch
  };
  struct Job;

  SpoolWriter(const Spool& spool, std::size_t sync_threads, std::unique_ptr<SpoolDisk> disk);
  void writer_loop();
  void helper_loop();
  void commit(std::vector<Request>& batch);
  void write_file(Request& request);
  // Runs write_file for every request of the batch on up to sync_threads threads.
  void write_files(std::vector<Request>& batch);
  // Takes the job's requests one at a time until none is left (writer and helpers alike).
  void run_job(Job& job);
  Error failure(std::string_view step, std::string_view dir, std::string_view name, int err) const;

  std::string spool_dir_;  // for error messages
  std::unique_ptr<SpoolDisk> disk_;
  int tmp_fd_ = -1;
  int queue_fd_ = -1;

  mutable std::mutex mutex_;  // guards pending_, stopping_, writer_idle_, stats_
  std::condition_variable wake_;
  std::vector<Request> pending_;
  bool stopping_ = false;
  bool writer_idle_ = false;
  Stats stats_;

  std::mutex job_mutex_;  // guards job_, helpers_stop_
  std::condition_variable job_ready_;
  std::condition_variable job_done_;
  std::shared_ptr<Job> job_;
  bool helpers_stop_ = false;

  std::vector<std::thread> helpers_;
  std::thread writer_;
};

}  // namespace mxgate::queue
