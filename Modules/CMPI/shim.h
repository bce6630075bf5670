// The one door to MPI (Debian's Open MPI; pkg-config `ompi-c` adds the include directory). Open
// MPI spells its predefined handles as macros that take the address of a global, which Swift
// cannot import, so each one used is handed over by an inline function.
#include <mpi.h>

static inline MPI_Comm pcd_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype pcd_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype pcd_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype pcd_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op pcd_mpi_sum(void) { return MPI_SUM; }
static inline void *pcd_mpi_in_place(void) { return MPI_IN_PLACE; }
