// The one door to OpenBLAS: every BLAS call in the package goes through this module.
// Debian ships the header under the pthread variant's include directory, which
// pkg-config `openblas` adds to the search path.
#include <cblas.h>
