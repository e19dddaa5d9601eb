//===- MpiCommunicator.cpp - collectives over MPI -------------------------===//

#include "ds/rt/MpiCommunicator.h"

#include "absl/strings/str_cat.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

namespace ds::rt {
namespace {

absl::Status mpiStatus(int code, const char *call) {
  if (code == MPI_SUCCESS)
    return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return absl::UnavailableError(
      absl::StrCat(call, " failed: ", std::string(text, length)));
}

/// MPI_COMM_WORLD, or a group of its ranks split from it (group()). Counts
/// go to MPI as int: a step moving more than 2^31 floats per rank is
/// refused (its buffers would be 8 GB).
class MpiCommunicator final : public Communicator {
public:
  /// `comm` at `rank` of `size`; a group counts its calls in its world's
  /// `stats`.
  MpiCommunicator(MPI_Comm comm, int rank, int size,
                  CommunicatorStats *stats = nullptr)
      : comm_(comm), rank_(rank), size_(size),
        stats_(stats ? stats : &ownStats_) {}
  ~MpiCommunicator() override {
    groups_.clear();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_WORLD && !finalized)
      MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  CommunicatorStats stats() const override { return *stats_; }

  /// MPI_Comm_split: the color is the group, the key the index in it, so
  /// the new communicator's ranks are the group's order.
  absl::StatusOr<Communicator *>
  group(const std::vector<int64_t> &shape,
        const std::vector<int64_t> &axes) override {
    int64_t total = 1;
    for (int64_t d : shape)
      total = d > 0 && total <= size_ / d ? total * d : -1;
    if (total != size_)
      return absl::InvalidArgumentError(absl::StrCat("a process grid of ",
                                                     total, " processes over ",
                                                     size_, " MPI ranks"));
    GridGroup g = gridGroupOf(shape, axes, rank_);
    if (g.size == size_)
      return this;
    auto key = std::make_pair(shape, axes);
    if (auto it = groups_.find(key); it != groups_.end())
      return it->second.get();
    MPI_Comm split;
    if (absl::Status st =
            mpiStatus(MPI_Comm_split(comm_, static_cast<int>(g.group),
                                     static_cast<int>(g.index), &split),
                      "MPI_Comm_split");
        !st.ok())
      return st;
    int rank = 0, size = 0;
    absl::Status st =
        mpiStatus(MPI_Comm_set_errhandler(split, MPI_ERRORS_RETURN),
                  "MPI_Comm_set_errhandler");
    if (st.ok())
      st = mpiStatus(MPI_Comm_rank(split, &rank), "MPI_Comm_rank");
    if (st.ok())
      st = mpiStatus(MPI_Comm_size(split, &size), "MPI_Comm_size");
    if (st.ok() && (size != g.size || rank != g.index))
      st = absl::InternalError(
          absl::StrCat("MPI_Comm_split gave rank ", rank, " of ", size,
                       " for place ", g.index, " of a group of ", g.size));
    if (!st.ok()) {
      MPI_Comm_free(&split);
      return st;
    }
    auto &slot = groups_[key];
    slot = std::make_unique<MpiCommunicator>(split, rank, size, stats_);
    return slot.get();
  }

  absl::Status allReduceSum(float *data, int64_t count) override {
    if (absl::Status st = fits(count); !st.ok())
      return st;
    Timed timed(*stats_, count);
    return mpiStatus(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count),
                                   MPI_FLOAT, MPI_SUM, comm_),
                     "MPI_Allreduce");
  }
  absl::Status allGather(const float *in, int64_t count, float *out) override {
    if (absl::Status st = fits(count); !st.ok())
      return st;
    Timed timed(*stats_, count);
    return mpiStatus(MPI_Allgather(in, static_cast<int>(count), MPI_FLOAT, out,
                                   static_cast<int>(count), MPI_FLOAT, comm_),
                     "MPI_Allgather");
  }
  absl::Status allToAll(const float *in, const std::vector<int64_t> &sendCounts,
                        float *out, const std::vector<int64_t> &recvCounts,
                        int64_t width) override {
    if (static_cast<int>(sendCounts.size()) != size_ ||
        static_cast<int>(recvCounts.size()) != size_)
      return absl::InvalidArgumentError("all-to-all counts per rank");
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      int64_t s = sendCounts[r] * width, c = recvCounts[r] * width;
      if (absl::Status st = fits(so + s); !st.ok())
        return st;
      if (absl::Status st = fits(ro + c); !st.ok())
        return st;
      sc[r] = static_cast<int>(s);
      sd[r] = static_cast<int>(so);
      rc[r] = static_cast<int>(c);
      rd[r] = static_cast<int>(ro);
      so += s;
      ro += c;
    }
    Timed timed(*stats_, so);
    return mpiStatus(MPI_Alltoallv(in, sc.data(), sd.data(), MPI_FLOAT, out,
                                   rc.data(), rd.data(), MPI_FLOAT, comm_),
                     "MPI_Alltoallv");
  }

  absl::Status send(const void *data, int64_t bytes, int peer) override {
    if (absl::Status st = fits(bytes); !st.ok())
      return st;
    Timed timed(*stats_, bytes / static_cast<int64_t>(sizeof(float)));
    return mpiStatus(MPI_Send(data, static_cast<int>(bytes), MPI_BYTE, peer,
                              kPointToPointTag, comm_),
                     "MPI_Send");
  }
  absl::Status recv(void *data, int64_t bytes, int peer) override {
    if (absl::Status st = fits(bytes); !st.ok())
      return st;
    Timed timed(*stats_, 0);
    MPI_Status status;
    if (absl::Status st =
            mpiStatus(MPI_Recv(data, static_cast<int>(bytes), MPI_BYTE, peer,
                               kPointToPointTag, comm_, &status),
                      "MPI_Recv");
        !st.ok())
      return st;
    int got = 0;
    MPI_Get_count(&status, MPI_BYTE, &got);
    if (got != bytes)
      return absl::DataLossError(absl::StrCat(
          "received ", got, " bytes from rank ", peer, ", expected ", bytes,
          " (the stages disagree on a "
          "shape)"));
    return absl::OkStatus();
  }
  absl::Status broadcast(void *data, int64_t bytes, int root) override {
    if (absl::Status st = fits(bytes); !st.ok())
      return st;
    Timed timed(*stats_, rank_ == root ? bytes / 4 : 0);
    return mpiStatus(
        MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_),
        "MPI_Bcast");
  }

private:
  static constexpr int kPointToPointTag = 7;
  /// Counts one call and its time (the executor calls from one thread).
  struct Timed {
    Timed(CommunicatorStats &stats, int64_t floats)
        : stats(stats), start(std::chrono::steady_clock::now()) {
      ++stats.calls;
      stats.bytesSent += floats * static_cast<int64_t>(sizeof(float));
    }
    ~Timed() {
      stats.seconds += std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - start)
                           .count();
    }
    CommunicatorStats &stats;
    std::chrono::steady_clock::time_point start;
  };

  static absl::Status fits(int64_t count) {
    if (count < 0 || count > INT32_MAX)
      return absl::InvalidArgumentError(
          absl::StrCat("a collective of ", count,
                       " floats is more than MPI's int counts reach"));
    return absl::OkStatus();
  }
  MPI_Comm comm_;
  int rank_, size_;
  CommunicatorStats ownStats_;
  CommunicatorStats *stats_;
  std::map<std::pair<std::vector<int64_t>, std::vector<int64_t>>,
           std::unique_ptr<MpiCommunicator>>
      groups_;
};

void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    MPI_Finalize();
}

} // namespace

void mpiAbort(int code) {
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

bool launchedByMpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") ||
         std::getenv("PMIX_RANK");
}

absl::StatusOr<std::shared_ptr<Communicator>> mpiWorldCommunicator() {
  static std::once_flag once;
  static absl::Status initStatus;
  std::call_once(once, [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // Each rank's executors call MPI from the thread that runs the step.
      int provided = 0;
      initStatus = mpiStatus(
          MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
          "MPI_Init_thread");
      if (initStatus.ok())
        std::atexit(finalize);
    }
    if (initStatus.ok())
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  });
  if (!initStatus.ok())
    return initStatus;
  int rank = 0, size = 1;
  if (absl::Status st =
          mpiStatus(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
      !st.ok())
    return st;
  if (absl::Status st =
          mpiStatus(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
      !st.ok())
    return st;
  return std::shared_ptr<Communicator>(
      new MpiCommunicator(MPI_COMM_WORLD, rank, size));
}

} // namespace ds::rt
