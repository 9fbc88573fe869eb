"""Label maps: (H,W) uint8, 0 background, 1..MAX_OBJECTS objects, VOID (255) ignored (DAVIS).

The one definition of the object limit, shared by the tracker and the mask readers; no torch here.
"""

VOID = 255
MAX_OBJECTS = 254  # ids 1..254: 0 is background and 255 is void in every DAVIS-style PNG
