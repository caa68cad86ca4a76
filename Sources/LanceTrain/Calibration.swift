// Calibration lives here.
