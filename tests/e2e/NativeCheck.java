import java.io.File;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Random;
import java.util.zip.CRC32;
import java.util.zip.CRC32C;
import java.util.zip.Checksum;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.io.nativeio.NativeIO;
import org.apache.hadoop.io.nativeio.NativeIOException;
import org.apache.hadoop.util.DataChecksum;
import org.apache.hadoop.util.NativeCodeLoader;

/** Checks zoo_ray's libhadoop.so through Hadoop's own classes; prints one line per finding. */
public class NativeCheck {
  public static void main(String[] args) throws Exception {
    System.out.println("native " + NativeCodeLoader.isNativeCodeLoaded() + " "
        + NativeIO.isAvailable());
    byte[] data = new byte[100_000];
    new Random(7).nextBytes(data);
    int bps = 512;
    int chunks = (data.length + bps - 1) / bps;
    for (DataChecksum.Type type : new DataChecksum.Type[] {
        DataChecksum.Type.CRC32, DataChecksum.Type.CRC32C}) {
      DataChecksum sum = DataChecksum.newDataChecksum(type, bps);
      ByteBuffer direct = ByteBuffer.allocateDirect(data.length).put(data).flip();
      ByteBuffer sums = ByteBuffer.allocateDirect(chunks * 4);
      sum.calculateChunkedSums(direct, sums);
      byte[] arraySums = new byte[chunks * 4];
      sum.calculateChunkedSums(data, 0, data.length, arraySums, 0);
      int wrong = 0;
      for (int i = 0; i < chunks; i++) {
        Checksum reference = type == DataChecksum.Type.CRC32 ? new CRC32() : new CRC32C();
        reference.update(data, i * bps, Math.min(bps, data.length - i * bps));
        int want = (int) reference.getValue();
        if (sums.getInt(i * 4) != want || ByteBuffer.wrap(arraySums).getInt(i * 4) != want) {
          wrong++;
        }
      }
      System.out.println(type + " chunks " + chunks + " wrong " + wrong);
      direct.put(70_001, (byte) (direct.get(70_001) ^ 1));
      try {
        sum.verifyChunkedSums(direct, sums, "corrupt", 0);
        System.out.println(type + " corruption missed");
      } catch (ChecksumException e) {
        System.out.println(type + " corruption at " + e.getPos());
      }
    }
    File file = File.createTempFile("native-check", ".txt");
    try {
      NativeIO.POSIX.chmod(file.getPath(), 0640);
      System.out.println("chmod " + PosixFilePermissions.toString(
          Files.getPosixFilePermissions(file.toPath())));
      NativeIO.POSIX.Stat stat = NativeIO.POSIX.getFstat(
          new java.io.FileInputStream(file).getFD());
      System.out.println("owner " + stat.getOwner());
      // The constants Java leaves at -1 for the library to set, and the errors Hadoop matches.
      System.out.println("O_CREAT " + NativeIO.POSIX.O_CREAT + " regular "
          + ((stat.getMode() & NativeIO.POSIX.Stat.S_IFMT) == NativeIO.POSIX.Stat.S_IFREG));
      try {
        NativeIO.POSIX.open(file.getPath(),
            NativeIO.POSIX.O_WRONLY | NativeIO.POSIX.O_CREAT | NativeIO.POSIX.O_EXCL, 0600);
        System.out.println("exclusive open missed");
      } catch (NativeIOException e) {
        System.out.println("exclusive open " + e.getErrno());
      }
    } finally {
      file.delete();
    }
  }
}
