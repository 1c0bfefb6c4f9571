# Times to the second, in ISO order: runs often last seconds, and Django's English default
# ("Nov. 30, 2026, 12:43 p.m.") shows minutes only, so a 2-second run looked instantaneous.
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
