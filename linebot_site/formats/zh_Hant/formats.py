# One way to write a time everywhere in the console, in TIME_ZONE (Asia/Taipei by
# default): lists, detail pages, threads and the audit log, in both languages.
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
