// libjpeg (Debian's libjpeg62-turbo-dev), for decoding the JPEG files of image folders.
#include <stdio.h>
#include <jpeglib.h>
