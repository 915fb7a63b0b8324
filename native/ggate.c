/* placeholder replaced by the native helper */
int hast_native_version(void) { return 1; }
