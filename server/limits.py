"""Named input limits, each with the reason it exists.

Settings may lower or raise them per deployment; these are the defaults and the hard ceilings
the code is tested against (tests/server/test_hardening.py has one test per limit).
"""

from __future__ import annotations

# A 10-minute 1080p H.264 clip at social-media bitrates is ~150–250 MB; 512 MiB leaves headroom
# for high-bitrate phone footage while bounding the disk one upload can fill.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024

# Verdicts are sampled, not exhaustive: beyond 30 minutes a check costs more than it tells,
# and longer media is mostly streams or compilations that should be checked by segment.
MAX_DURATION_S = 30 * 60

# 4K (3840x2160 ≈ 8.3 MP) is the largest size the extension meets; larger frames are either
# exotic or decompression bombs meant to exhaust memory (one 16k RGB frame is 800 MB).
MAX_FRAME_PIXELS = 3840 * 2160

# Frame rates above 240 fps are slow-motion captures or malformed timestamps; both make
# "frames per second of video" sampling meaningless.
MAX_FPS = 240.0

# Hard cap on sampled frames per check: at the default 2 frames/s this is 30 minutes, and it
# bounds the timeline stored in the database for any rate setting.
MAX_SAMPLED_FRAMES = 3600

# Hard cap on frames *decoded* (not just sampled) per check, so a file with absurd timestamps
# cannot keep the decoder busy forever: 30 min at 60 fps.
MAX_DECODED_FRAMES = 30 * 60 * 60

# Faces per sampled frame sent to the detector; crowd shots beyond this cost linearly and
# the largest faces carry the signal.
MAX_FACES_PER_FRAME = 8

# Sampling rate bounds: below 0.1 fps a 60 s clip gets 6 frames (too few to decide),
# above 30 fps sampling equals decoding every frame of typical web video.
MIN_SAMPLE_RATE = 0.1
MAX_SAMPLE_RATE = 30.0

# JSON request bodies (URL checks, look-ups) are tiny; anything bigger is abuse.
MAX_JSON_BYTES = 64 * 1024

# Bytes read from an upload before the container must be recognisable by its magic bytes.
SNIFF_BYTES = 64 * 1024
