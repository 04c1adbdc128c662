// See spool_writer.hpp for the batch, its results and the durability rules.
#include "queue/spool_writer.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "util/unique_fd.hpp"

namespace mxgate::queue {

int SpoolDisk::create(int dir_fd, const std::string& name, int& fd) {
  fd = ::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  return fd < 0 ? errno : 0;
}

int SpoolDisk::write(int fd, std::string_view data) { return write_all(fd, data); }

int SpoolDisk::sync(int fd) { return ::fdatasync(fd) == 0 ? 0 : errno; }

// EINTR is not retried: on Linux the descriptor is released even then.
int SpoolDisk::close(int fd) { return ::close(fd) == 0 ? 0 : errno; }

int SpoolDisk::rename(int from_dir, int to_dir, const std::string& name) {
  if (::renameat2(from_dir, name.c_str(), to_dir, name.c_str(), RENAME_NOREPLACE) == 0) return 0;
  const int err = errno;
  // File systems without RENAME_NOREPLACE: the names are unique by
  // construction, the flag is only a safety net.
  if (err != EINVAL && err != ENOSYS) return err;
  return ::renameat(from_dir, name.c_str(), to_dir, name.c_str()) == 0 ? 0 : errno;
}

int SpoolDisk::sync_directory(int dir_fd) { return ::fsync(dir_fd) == 0 ? 0 : errno; }

int SpoolDisk::unlink(int dir_fd, const std::string& name) {
  return ::unlinkat(dir_fd, name.c_str(), 0) == 0 ? 0 : errno;
}

// One batch's step 1 shared with the helpers.  size is copied so that a
// helper that wakes late never looks at the batch vector, which the writer
// reuses for the next batch once done == size.
struct SpoolWriter::Job {
  std::vector<Request>* batch = nullptr;
  std::size_t size = 0;
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
};

Result<std::unique_ptr<SpoolWriter>> SpoolWriter::start(const Spool& spool, std::size_t sync_threads,
                                                        std::unique_ptr<SpoolDisk> disk) {
  std::unique_ptr<SpoolWriter> writer(
      new SpoolWriter(spool, std::max<std::size_t>(sync_threads, 1), std::move(disk)));
  for (auto [name, fd] : {std::pair{"tmp", &writer->tmp_fd_}, std::pair{"queue", &writer->queue_fd_}}) {
    const auto dir = spool.directory() / name;
    *fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return make_error("spool: open " + dir.string() + ": " + errno_text(errno));
  }
  writer->writer_ = std::thread([w = writer.get()] { w->writer_loop(); });
  for (std::size_t i = 1; i < sync_threads; ++i) writer->helpers_.emplace_back([w = writer.get()] { w->helper_loop(); });
  return writer;
}

SpoolWriter::SpoolWriter(const Spool& spool, std::size_t, std::unique_ptr<SpoolDisk> disk)
    : spool_dir_(spool.directory().string()), disk_(disk ? std::move(disk) : std::make_unique<SpoolDisk>()) {}

SpoolWriter::~SpoolWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (writer_.joinable()) writer_.join();  // commits what is pending first
  {
    std::lock_guard lock(job_mutex_);
    helpers_stop_ = true;
  }
  job_ready_.notify_all();
  for (auto& helper : helpers_) helper.join();
  for (int fd : {tmp_fd_, queue_fd_})
    if (fd >= 0) ::close(fd);
}

void SpoolWriter::submit(const Envelope& envelope, std::string_view content, Done done) {
  std::unique_lock lock(mutex_);
  if (stopping_) {
    lock.unlock();
    done(make_error("spool: writer stopped"));
    return;
  }
  pending_.push_back(Request{&envelope, content, std::move(done), {}, {}, false});
  // Only an idle writer needs waking; a busy one takes pending_ when its
  // batch is done.  This keeps a futex call off most submissions.
  const bool wake = std::exchange(writer_idle_, false);
  lock.unlock();
  if (wake) wake_.notify_one();
}

SpoolWriter::Stats SpoolWriter::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void SpoolWriter::writer_loop() {
  std::vector<Request> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (pending_.empty() && !stopping_) {
        writer_idle_ = true;
        wake_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
        writer_idle_ = false;
      }
      if (pending_.empty()) return;  // stopping, and everything is done
      batch.swap(pending_);
      ++stats_.batches;
      stats_.messages += batch.size();
      stats_.largest_batch = std::max(stats_.largest_batch, batch.size());
    }
    commit(batch);
    batch.clear();
  }
}

void SpoolWriter::commit(std::vector<Request>& batch) {
  for (Request& r : batch) {
    auto header = Spool::encode_header(*r.envelope, r.content.size());
    if (header) {
      r.header = std::move(header.value());
    } else {
      r.result = make_error(header.error());
    }
  }

  write_files(batch);  // step 1

  bool renamed = false;  // step 2
  for (Request& r : batch) {
    if (!r.result) continue;
    const std::string& id = r.envelope->id;
    if (const int err = disk_->rename(tmp_fd_, queue_fd_, id); err != 0) {
      disk_->unlink(tmp_fd_, id);
      r.result = failure("rename to", "queue", id, err);
      continue;
    }
    r.in_queue = true;
    renamed = true;
  }

  if (renamed) {  // step 3
    if (const int err = disk_->sync_directory(queue_fd_); err != 0) {
      // Not durable, so not done, for any file of the batch; see the header.
      const Error failed = failure("fsync", "queue", "", err);
      for (Request& r : batch) {
        if (!r.in_queue) continue;
        r.result = failed;
        if (const int unlink_err = disk_->unlink(queue_fd_, r.envelope->id); unlink_err != 0) {
          r.result = make_error(failed.message + "; cannot remove " + spool_dir_ + "/queue/" + r.envelope->id +
                                " again (it may be delivered anyway): " + errno_text(unlink_err));
        }
      }
    }
  }

  for (Request& r : batch) r.done(std::move(r.result));  // step 4
}

void SpoolWriter::write_files(std::vector<Request>& batch) {
  const std::size_t todo =
      static_cast<std::size_t>(std::count_if(batch.begin(), batch.end(), [](const Request& r) { return r.result.ok(); }));
  if (todo <= 1 || helpers_.empty()) {
    for (Request& r : batch)
      if (r.result) write_file(r);
    return;
  }
  auto job = std::make_shared<Job>();
  job->batch = &batch;
  job->size = batch.size();
  {
    std::lock_guard lock(job_mutex_);
    job_ = job;
  }
  for (std::size_t i = 0; i < std::min(todo - 1, helpers_.size()); ++i) job_ready_.notify_one();

  run_job(*job);
  std::unique_lock lock(job_mutex_);
  job_done_.wait(lock, [&] { return job->done.load() == job->size; });
  job_.reset();
}

void SpoolWriter::helper_loop() {
  std::shared_ptr<Job> last;  // held, so a new job never has its address
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(job_mutex_);
      job_ready_.wait(lock, [&] { return helpers_stop_ || (job_ && job_ != last); });
      if (helpers_stop_) return;
      job = last = job_;
    }
    run_job(*job);
  }
}

void SpoolWriter::run_job(Job& job) {
  for (std::size_t i; (i = job.next.fetch_add(1)) < job.size;) {
    Request& r = (*job.batch)[i];
    if (r.result) write_file(r);
    if (job.done.fetch_add(1) + 1 == job.size) {
      std::lock_guard lock(job_mutex_);
      job_done_.notify_all();
    }
  }
}

void SpoolWriter::write_file(Request& r) {
  const std::string& id = r.envelope->id;
  int fd = -1;
  // Not ours to unlink when O_EXCL refused it: it may be another writer's file.
  if (const int err = disk_->create(tmp_fd_, id, fd); err != 0) {
    r.result = failure("create", "tmp", id, err);
    return;
  }
  const char* step = "write";
  int err = disk_->write(fd, r.header);
  if (err == 0) err = disk_->write(fd, r.content);
  if (err == 0) {
    step = "fdatasync";
    err = disk_->sync(fd);
  }
  // close(2) may be the first to report a write error, so it is checked.
  if (const int close_err = disk_->close(fd); err == 0 && close_err != 0) {
    step = "close";
    err = close_err;
  }
  if (err != 0) {
    disk_->unlink(tmp_fd_, id);
    r.result = failure(step, "tmp", id, err);
  }
  r.header = std::string();  // the memory is not needed for the rest of the batch
}

Error SpoolWriter::failure(std::string_view step, std::string_view dir, std::string_view name, int err) const {
  std::string text = "spool: ";
  text.append(step).append(" ").append(spool_dir_).append("/").append(dir);
  if (!name.empty()) text.append("/").append(name);
  return make_error(text.append(": ").append(errno_text(err)));
}

}  // namespace mxgate::queue
