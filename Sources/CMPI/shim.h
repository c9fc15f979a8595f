// OpenMPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are macros over the
// addresses of global structs, which Swift cannot import. These inline accessors give them to Swift.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

static inline MPI_Comm kaleido_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm kaleido_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype kaleido_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype kaleido_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype kaleido_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype kaleido_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype kaleido_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Op kaleido_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op kaleido_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op kaleido_mpi_min(void) { return MPI_MIN; }
static inline MPI_Op kaleido_mpi_bxor(void) { return MPI_BXOR; }
static inline MPI_Request kaleido_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *kaleido_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *kaleido_mpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline MPI_Info kaleido_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline MPI_Errhandler kaleido_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline void *kaleido_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int kaleido_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int kaleido_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int kaleido_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline int kaleido_mpi_max_library_version_string(void) { return MPI_MAX_LIBRARY_VERSION_STRING; }
static inline int kaleido_mpi_success(void) { return MPI_SUCCESS; }
static inline int kaleido_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int kaleido_mpi_status_source(const MPI_Status *status) { return status->MPI_SOURCE; }
