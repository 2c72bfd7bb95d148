-- The shop's roles and grants, as an administrator writes them in HiveQL.
-- Run by demo/run.sh with `hms-guard sql -f demo/grants.sql` (as admin, through hms-guard);
-- `hms-guard sql --plan demo/grants.sql` shows what it would change, `--apply` makes
-- exactly that.
Set role admin;
Use demo_database;

Create role sales;
Create role marketing;
Create role finance;

-- sales sells: reads and adds customers and sales.
Grant select, insert on customer to role sales;
Grant select, insert on store_sales to role sales;
Grant select on promotion to role sales;

-- marketing runs the promotions.
Grant select on customer to role marketing;
Grant select on store_sales to role marketing;
Grant select, insert on promotion to role marketing;

-- finance reads customers only through the views: no ssn, and the EU rows.
Grant select on customer_public to role finance;
Grant select on customer_eu to role finance;
Grant select on store_sales to role finance;
Grant select on promotion to role finance;

GRANT role sales to USER david;
GRANT role marketing to USER mary;
GRANT role finance to USER john;
