"""Whisper's audio hyperparameters, in a module of their own: reading a file (asr.audio.load)
needs the sample rate but not torch, which the log-mel front-end (asr.audio.features) imports."""
SAMPLE_RATE = 16000  # Hz; every model input is resampled to this rate
N_FFT = 400  # samples per STFT window = 25 ms at 16 kHz
HOP_LENGTH = 160  # samples between STFT frames = 10 ms at 16 kHz
CHUNK_LENGTH = 30  # seconds in one fixed-size Whisper input window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30 s window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second (10 ms each)
FRAMES_PER_TIMESTAMP = 2  # mel frames per step of Whisper's timestamp tokens (0.02 s)
