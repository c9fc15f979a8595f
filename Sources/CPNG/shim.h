// libpng's simplified API (png_image_*) is all Kaleido needs: 8-bit RGB and 16-bit gray (depth) files.
#include <png.h>
