// libpng (Debian's libpng-dev), for decoding the PNG files of image folders.
#include <png.h>
