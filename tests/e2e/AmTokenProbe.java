// Submits an application whose ApplicationMaster runs in the client (an unmanaged AM, as
// Spark's in-driver AM does), waits until YARN launched its attempt, and prints as JSON what
// the ResourceManager's report gives the submitter: the application's user, the caller's
// name, and whether the report carries the AMRMToken an unmanaged AM registers with. The
// application is killed before the probe exits. Run with the cluster's configuration and
// Hadoop's jars on the class path (tests/e2e/java_probe.py).
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.hadoop.yarn.api.records.ApplicationAttemptId;
import org.apache.hadoop.yarn.api.records.ApplicationId;
import org.apache.hadoop.yarn.api.records.ApplicationReport;
import org.apache.hadoop.yarn.api.records.ApplicationSubmissionContext;
import org.apache.hadoop.yarn.api.records.ContainerLaunchContext;
import org.apache.hadoop.yarn.api.records.Resource;
import org.apache.hadoop.yarn.client.api.YarnClient;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

public class AmTokenProbe {
  public static void main(String[] args) throws Exception {
    YarnConfiguration conf = new YarnConfiguration();
    UserGroupInformation.setConfiguration(conf);
    YarnClient client = YarnClient.createYarnClient();
    client.init(conf);
    client.start();
    ApplicationSubmissionContext context =
        client.createApplication().getApplicationSubmissionContext();
    ApplicationId id = context.getApplicationId();
    context.setApplicationName("am-token-probe");
    context.setUnmanagedAM(true);
    context.setAMContainerSpec(
        ContainerLaunchContext.newInstance(null, null, null, null, null, null));
    context.setResource(Resource.newInstance(128, 1));
    client.submitApplication(context);
    try {
      String attempt = "none";
      boolean token = false;
      ApplicationReport report = client.getApplicationReport(id);
      long deadline = System.currentTimeMillis() + 60_000;
      while (System.currentTimeMillis() < deadline && !attempt.equals("LAUNCHED")) {
        Thread.sleep(500);
        report = client.getApplicationReport(id);
        ApplicationAttemptId current = report.getCurrentApplicationAttemptId();
        if (current != null) {
          attempt = client.getApplicationAttemptReport(current)
              .getYarnApplicationAttemptState().toString();
        }
      }
      // The ResourceManager hands the token out once the attempt is LAUNCHED: a few looks.
      for (int look = 0; look < 3 && !token; look++) {
        token = client.getApplicationReport(id).getAMRMToken() != null;
        Thread.sleep(500);
      }
      System.out.printf(
          "{\"app\": \"%s\", \"attempt\": \"%s\", \"token\": %b, \"user\": \"%s\","
              + " \"caller\": \"%s\"}%n",
          id, attempt, token, report.getUser(),
          UserGroupInformation.getCurrentUser().getUserName());
    } finally {
      client.killApplication(id);
      client.stop();
    }
  }
}
