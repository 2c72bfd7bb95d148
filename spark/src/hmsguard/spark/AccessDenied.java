package hmsguard.spark;

/** A write (or read by path) refused before any file was touched, with hms-guard's message. */
public final class AccessDenied extends SecurityException {
    private static final long serialVersionUID = 1L;

    public AccessDenied(String message) {
        super(message);
    }
}
